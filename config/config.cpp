#include "config/config.h"

#include <cmath>

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>

#include "kernels/error.h"

namespace moe {
namespace {

// ---- The key registry ------------------------------------------------------------------

struct Field {
  std::string key;   // dotted path, e.g. "model.d_model"
  std::string type;  // human-readable type and range, e.g. "int >= 1"
  std::string doc;
  std::function<void(Config&, const YAML::Node&, const std::string& where)> parse;
  std::function<std::string(const Config&)> show;  // the value as YAML text
};

// Numeric range: each end inclusive or open. Shown in the reference and in errors.
struct Range {
  double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
  bool contains(double v) const { return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi); }
  std::string str() const {
    const bool has_lo = lo > -std::numeric_limits<double>::infinity();
    const bool has_hi = hi < std::numeric_limits<double>::infinity();
    if (has_lo && has_hi) return fmt::format("in {}{}, {}{}", lo_open ? "(" : "[", lo, hi, hi_open ? ")" : "]");
    if (has_lo) return fmt::format("{} {}", lo_open ? ">" : ">=", lo);
    if (has_hi) return fmt::format("{} {}", hi_open ? "<" : "<=", hi);
    return "";
  }
};
Range at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
Range above(double lo) { return {lo, std::numeric_limits<double>::infinity(), true, false}; }
Range closed(double lo, double hi) { return {lo, hi, false, false}; }
Range half_open(double lo, double hi) { return {lo, hi, false, true}; }
Range open(double lo, double hi) { return {lo, hi, true, true}; }

std::string scalar_text(const YAML::Node& n) { return n.IsScalar() ? n.Scalar() : "a non-scalar value"; }

[[noreturn]] void bad(const std::string& where, const std::string& key, const std::string& what) {
  throw ConfigError(fmt::format("{}: {}: {}", where, key, what));
}

template <class T>
T as(const YAML::Node& n, const std::string& where, const std::string& key, const char* kind) {
  if (!n.IsScalar())
    bad(where, key,
        fmt::format("expected {}, got a {}", kind,
                    n.IsMap()        ? "mapping"
                    : n.IsSequence() ? "list"
                                     : "null"));
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    bad(where, key, fmt::format("expected {}, got '{}'", kind, scalar_text(n)));
  }
}

// An integer or real key with a range; V is std::int64_t or double.
template <class V, class Get>
Field number(const char* key, Get get, Range r, std::string doc) {
  constexpr bool is_int = std::is_integral_v<V>;
  std::string k = key;
  return {k, std::string(is_int ? "int " : "real ") + r.str(), std::move(doc),
          [k, get, r](Config& c, const YAML::Node& n, const std::string& where) {
            const V v = as<V>(n, where, k, is_int ? "an integer" : "a number");
            if (!std::isfinite(static_cast<double>(v)))  // .inf / .nan: no key means them
              bad(where, k, fmt::format("{} is not a finite number", v));
            if (!r.contains(static_cast<double>(v)))
              bad(where, k, fmt::format("{} is out of range: must be {}", v, r.str()));
            get(c) = v;
          },
          [get](const Config& c) { return fmt::format("{}", get(c)); }};
}
template <class Get>
Field integer(const char* key, Get get, Range r, std::string doc) {
  return number<std::int64_t>(key, get, r, std::move(doc));
}
template <class Get>
Field real(const char* key, Get get, Range r, std::string doc) {
  return number<double>(key, get, r, std::move(doc));
}

template <class Get>
Field boolean(const char* key, Get get, std::string doc) {
  std::string k = key;
  return {k, "bool", std::move(doc),
          [k, get](Config& c, const YAML::Node& n, const std::string& where) {
            get(c) = as<bool>(n, where, k, "true or false");
          },
          [get](const Config& c) { return std::string(get(c) ? "true" : "false"); }};
}

// A string; `optional` lets it be empty (meaning none).
template <class Get>
Field text(const char* key, Get get, std::string doc, bool optional = false) {
  std::string k = key;
  return {k, optional ? "string (may be empty)" : "string", std::move(doc),
          [k, get, optional](Config& c, const YAML::Node& n, const std::string& where) {
            // A key written with no value is YAML's null, not "none": `dir:` would switch
            // checkpoints off without a word. An empty value is written "".
            if (n.IsNull())
              bad(where, k, optional ? "has no value (YAML null); write \"\" for none" : "has no value (YAML null)");
            auto v = as<std::string>(n, where, k, "a string");
            if (v.empty() && !optional) bad(where, k, "must not be empty");
            get(c) = std::move(v);
          },
          [get](const Config& c) {
            YAML::Emitter e;  // quotes and escapes only when YAML needs it
            e << get(c);
            return std::string(e.c_str());
          }};
}

// A list: a YAML sequence, or one value for a list of one. V is std::string (non-empty
// entries) or std::int64_t (positive entries).
template <class V, class Get>
Field list_of(const char* key, Get get, std::string doc) {
  constexpr bool text = std::is_same_v<V, std::string>;
  const char* what = text ? "a list of strings" : "a list of integers";
  std::string k = key;
  return {k, text ? "list of strings" : "list of ints", std::move(doc),
          [k, get, what](Config& c, const YAML::Node& n, const std::string& where) {
            std::vector<V> v;
            if (n.IsSequence())
              for (const auto& item : n) v.push_back(as<V>(item, where, k, what));
            else if (!n.IsNull()) v.push_back(as<V>(n, where, k, what));
            for (const auto& x : v) {
              if constexpr (text) {
                if (x.empty()) bad(where, k, "an empty pattern");
              } else if (x < 1) {
                bad(where, k, fmt::format("{} is out of range: entries must be >= 1", x));
              }
            }
            get(c) = std::move(v);
          },
          [get](const Config& c) {
            YAML::Emitter e;
            e << YAML::Flow << get(c);
            return std::string(e.c_str());
          }};
}
template <class Get>
Field text_list(const char* key, Get get, std::string doc) {
  return list_of<std::string>(key, get, std::move(doc));
}

// data.sources: a list of {dir: DIR, weight: W} mappings (weight finite and > 0).
template <class Get>
Field sources(const char* key, Get get, std::string doc) {
  std::string k = key;
  return {k, "list of {dir, weight}", std::move(doc),
          [k, get](Config& c, const YAML::Node& n, const std::string& where) {
            std::vector<DataSource> v;
            if (!n.IsNull() && !n.IsSequence()) bad(where, k, "expected a list of {dir: ..., weight: ...} mappings");
            for (const auto& item : n) {
              if (!item.IsMap()) bad(where, k, "each entry is a mapping {dir: DIR, weight: W}");
              DataSource s;
              for (const auto& kv : item) {
                const auto name = kv.first.as<std::string>();
                if (name == "dir") s.dir = as<std::string>(kv.second, where, k + ".dir", "a directory");
                else if (name == "weight") s.weight = as<double>(kv.second, where, k + ".weight", "a number");
                else bad(where, k, fmt::format("unknown entry key '{}' (an entry has dir and weight)", name));
              }
              if (s.dir.empty()) bad(where, k, "an entry without its dir");
              if (!std::isfinite(s.weight) || s.weight <= 0)
                bad(where, k, fmt::format("{}: weight {} must be finite and > 0", s.dir, s.weight));
              v.push_back(std::move(s));
            }
            get(c) = std::move(v);
          },
          [get](const Config& c) {
            YAML::Emitter e;
            e << YAML::Flow << YAML::BeginSeq;
            for (const auto& s : get(c))
              e << YAML::BeginMap << YAML::Key << "dir" << YAML::Value << s.dir << YAML::Key << "weight" << YAML::Value
                << s.weight << YAML::EndMap;
            e << YAML::EndSeq;
            return std::string(e.c_str());
          }};
}

template <class E, class Get>
Field choice(const char* key, Get get, std::vector<std::pair<std::string, E>> names, std::string doc) {
  std::string k = key, list;
  for (const auto& [name, _] : names) list += (list.empty() ? "" : ", ") + name;
  return {k, "one of " + list, std::move(doc),
          [k, get, names, list](Config& c, const YAML::Node& n, const std::string& where) {
            const auto v = as<std::string>(n, where, k, "a name");
            for (const auto& [name, value] : names)
              if (name == v) return void(get(c) = value);
            bad(where, k, fmt::format("'{}' is not one of {}", v, list));
          },
          [get, names](const Config& c) {
            for (const auto& [name, value] : names)
              if (value == get(c)) return name;
            return std::string("?");
          }};
}

// AT(model.d_model) -> the key "model.d_model" and an accessor for that member.
#define AT(path) \
#path, [](auto& c) -> auto& { return c.path; }

// Long by design: the registry is one table, a row per key, read top to bottom like the
// README's reference it generates.
const std::vector<Field>& fields() {
  static const std::vector<Field> f = {
      choice<Precision>(AT(precision), {{"fp32", Precision::fp32}, {"bf16", Precision::bf16}, {"fp8", Precision::fp8}},
                        "GEMM precision; master weights and optimizer state stay FP32"),
      choice<DeviceKind>(AT(device), {{"cpu", DeviceKind::cpu}, {"cuda", DeviceKind::cuda}, {"sim", DeviceKind::sim}},
                         "where the ops run (cuda: one GPU per process, tp 1; sim: a simulated GPU for CI, the CPU's "
                         "kernels behind GPU residency rules)"),

      integer(AT(model.vocab_size), at_least(2), "vocabulary size (moe data prepare trains a tokenizer of this size)"),
      integer(AT(model.seq_len), at_least(1), "tokens per training sequence"),
      integer(AT(model.d_model), at_least(1), "residual stream width"),
      integer(AT(model.n_layers), at_least(1), "transformer blocks"),
      integer(AT(model.n_heads), at_least(1), "attention query heads"),
      integer(AT(model.n_kv_heads), at_least(1), "key/value heads (GQA); divides n_heads"),
      choice<AttentionType>(AT(model.attention), {{"gqa", AttentionType::gqa}, {"mla", AttentionType::mla}},
                            "gqa: RoPE attention with grouped key/value heads, or mla: DeepSeek-V3's multi-head latent "
                            "attention"),
      integer(AT(model.q_lora_rank), at_least(0), "mla: query compression width (0: none)"),
      integer(AT(model.kv_lora_rank), at_least(1), "mla: key/value latent width"),
      integer(AT(model.qk_nope_head_dim), at_least(1), "mla: per-head query/key width without RoPE"),
      integer(AT(model.qk_rope_head_dim), at_least(2), "mla: per-head query/key width with RoPE; even"),
      integer(AT(model.v_head_dim), at_least(1), "mla: per-head value width"),
      integer(AT(model.ffn_hidden), at_least(1), "hidden width of the dense SwiGLU FFN"),
      integer(AT(model.dense_layers), at_least(0), "leading blocks with a dense FFN; the rest are MoE"),
      integer(AT(model.routed_experts), at_least(0), "routed experts per MoE block (0: every block dense)"),
      integer(AT(model.shared_experts), at_least(0), "always-on experts per MoE block"),
      integer(AT(model.top_k), at_least(1), "routed experts chosen per token"),
      integer(AT(model.expert_hidden), at_least(1), "hidden width of one expert's SwiGLU"),
      choice<RouterType>(AT(model.router), {{"sigmoid", RouterType::sigmoid}, {"softmax", RouterType::softmax}},
                         "router scores: sigmoid (DeepSeek-V3) or softmax (Mixtral)"),
      boolean(AT(model.router_normalize), "divide the chosen gates by their sum"),
      integer(AT(model.n_groups), at_least(1), "expert groups for group-limited routing; divides routed_experts"),
      integer(AT(model.topk_groups), at_least(1), "groups a token may reach; <= n_groups"),
      real(AT(model.routed_scaling_factor), above(0), "multiplies the routed gates"),
      real(AT(model.bias_update_rate), at_least(0), "step of the auxiliary-loss-free balancing bias"),
      real(AT(model.aux_loss_coef), at_least(0), "weight of the sequence-wise balance loss"),
      real(AT(model.router_z_loss_coef), at_least(0),
           "weight of the router z-loss, the mean squared log-sum-exp of the router logits (ST-MoE; 0: off)"),
      // (at most routed_experts / top_k is needed: beyond it no assignment can be dropped; the
      // bound keeps capacity x tokens far inside an integer)
      real(AT(model.capacity_factor), closed(0, 1e4), "expert capacity as a multiple of the mean load (0: dropless)"),
      real(AT(model.norm_eps), open(0, 1), "RMSNorm epsilon"),
      real(AT(model.rope_theta), above(1), "RoPE base"),
      real(AT(model.rope_factor), at_least(1), "YaRN context extension factor (1: no RoPE scaling)"),
      integer(AT(model.rope_original_positions), at_least(1), "YaRN: the context length before extension"),
      real(AT(model.rope_beta_fast), above(0),
           "YaRN: rotations within the original context above which a pair keeps its frequency"),
      real(AT(model.rope_beta_slow), above(0), "YaRN: rotations below which a pair is fully interpolated"),
      real(AT(model.rope_mscale), at_least(0), "YaRN: mscale of the cos/sin attention factor (0: unset)"),
      real(AT(model.rope_mscale_all_dim), at_least(0), "YaRN: mscale_all_dim (mla: the softmax scale's too; 0: unset)"),
      real(AT(model.rope_attention_factor), at_least(0), "YaRN: cos/sin factor (0: derived from factor and mscales)"),
      real(AT(model.init_std), above(0), "standard deviation of the initial weights"),
      integer(AT(model.mtp_depth), closed(0, 16),
              "multi-token prediction depths after the last block (DeepSeek-V3: 1; 0: none)"),

      // LoRA lives in ModelConfig (adapters are part of the network) under its own section.
      integer(
          "lora.rank", [](auto& c) -> auto& { return c.model.lora.rank; }, closed(0, 65536),
          "LoRA adapter rank (0: off; on: only the adapters train, every other tensor is frozen)"),
      real(
          "lora.alpha", [](auto& c) -> auto& { return c.model.lora.alpha; }, above(0),
          "LoRA scale numerator: the update is scaled by alpha / rank"),
      boolean(
          "lora.rslora", [](auto& c) -> auto& { return c.model.lora.rslora; },
          "rank-stabilized LoRA (PEFT's use_rslora): the update scaled by alpha / sqrt(rank), so that larger ranks "
          "keep learning"),
      text_list(
          "lora.targets", [](auto& c) -> auto& { return c.model.lora.targets; },
          "projections LoRA adapts, as PEFT's target_modules: names matching a module by its last parts "
          "(q_proj, experts.down_proj), or all-linear"),

      integer(AT(train.steps), at_least(1), "optimizer steps"),
      integer(AT(train.stop_at), at_least(0),
              "end this launch after this step, checkpointed, as a time-limited job would (0: run to train.steps)"),
      integer(AT(train.micro_batch), at_least(1), "sequences per micro-batch per data-parallel rank"),
      integer(AT(train.grad_accum), at_least(1), "micro-batches per optimizer step"),
      real(AT(train.lr), open(0, 1), "peak learning rate"),
      real(AT(train.min_lr), at_least(0), "learning rate at the end of the decay; <= lr"),
      integer(AT(train.warmup_steps), at_least(0), "linear warm-up steps"),
      choice<LrSchedule>(AT(train.lr_schedule),
                         {{"cosine", LrSchedule::cosine},
                          {"linear", LrSchedule::linear},
                          {"constant", LrSchedule::constant},
                          {"wsd", LrSchedule::wsd}},
                         "after warm-up: cosine or linear decay to min_lr, constant, or warmup-stable-decay"),
      real(AT(train.decay_fraction), closed(0, 1), "wsd: share of the steps spent decaying (linearly) to min_lr"),
      real(AT(train.weight_decay), closed(0, 1), "AdamW decoupled weight decay"),
      real(AT(train.beta1), half_open(0, 1), "AdamW beta1"),
      real(AT(train.beta2), half_open(0, 1), "AdamW beta2"),
      real(AT(train.adam_eps), open(0, 1), "AdamW epsilon"),
      real(AT(train.grad_clip), at_least(0), "global gradient-norm clip (0: off)"),
      integer(AT(train.seed), at_least(0), "seed of initialisation and data order"),
      integer(AT(train.log_every), at_least(1), "steps between log lines"),
      integer(AT(train.eval_every), at_least(0), "steps between validation passes (0: at the end only)"),
      integer(AT(train.eval_batches), at_least(1), "global batches per validation pass"),
      real(AT(train.target_tokens), at_least(0), "token budget the cost report projects to (0: none)"),
      boolean(AT(train.recompute),
              "full activation recomputation: each block keeps only its input and runs its forward again in backward "
              "(less memory, about 1/3 more compute)"),
      integer(AT(train.max_skipped_steps), at_least(1),
              "consecutive skipped steps (non-finite loss or gradient, loss spike) after which the run stops with an "
              "error, its last checkpoint intact"),
      real(AT(train.spike_zscore), at_least(0),
           "skip a step whose loss is more than this many standard deviations above the mean of the last spike_window "
           "steps (0: off)"),
      integer(AT(train.spike_window), at_least(2),
              "applied steps the loss-spike check looks back over (and waits for)"),
      real(AT(train.watchdog_s), at_least(0),
           "a rank without progress (no step started, no collective completed) for this many seconds prints where it "
           "is stuck and ends the job (0: off)"),
      real(AT(train.mtp_loss_weight), at_least(0), "weight of the multi-token-prediction loss (model.mtp_depth > 0)"),
      real(AT(train.mtp_loss_weight_final), at_least(0),
           "the MTP loss weight from train.mtp_final_fraction of the steps on (DeepSeek-V3: 0.3, then 0.1)"),
      real(AT(train.mtp_final_fraction), closed(0, 1),
           "share of train.steps after which train.mtp_loss_weight_final applies (1: never)"),
      text_list(AT(train.freeze),
                "parameter name patterns kept fixed (fnmatch, e.g. '*embed_tokens*', '*.mlp.gate.weight')"),

      text(AT(data.corpus), "text corpus for moe data prepare: a directory of text files or one file"),
      text(AT(data.dir), "prepared data: tokenizer and token shards (written by moe data prepare)"),
      sources(AT(data.sources),
              "a training mixture: [{dir: PREPARED_DIR, weight: W}, ...], sequences drawn in proportion to the "
              "weights (exact to within one per source at every step); data.dir must be one of them"),
      real(AT(data.val_fraction), half_open(0, 0.5), "share of documents held out for evaluation"),
      text(
          AT(data.tokenizer),
          "moe data prepare reuses this tokenizer.model, or a model's Hugging Face tokenizer.json, instead of training "
          "one (fine-tuning keeps the base vocabulary)",
          true),
      integer(AT(data.tokenizer_sample_mb), closed(1, 1 << 20),
              "a trained tokenizer learns from a seeded sample of about this many MiB of the training documents "
              "(all of them when fewer); what the tokenizer's training holds in memory"),
      integer(AT(data.sort_mb), closed(1, 1 << 20),
              "moe data prepare's deduplication keys held in memory per sorter before a sorted run spills to disk"),
      text(
          "data.chat_template", [](auto& c) -> auto& { return c.data.chat.message; },
          "chat data (.jsonl): how one message renders, {role} and then {content} replaced (the loss counts an "
          "assistant message from {content} to its end); or a Jinja template as in a Hugging Face "
          "tokenizer_config.json, or tokenizer: the chat_template of data.tokenizer's (rendered as transformers' "
          "apply_chat_template does)"),
      choice<bool>(
          "data.loss_on", [](auto& c) -> auto& { return c.data.chat.loss_on_all; },
          {{"assistant", false}, {"all", true}},
          "chat data: the tokens the loss counts (assistant: the assistant's messages and the end after the last; "
          "all: every token)"),
      choice<data::DocumentMask>(
          AT(data.document_mask),
          {{"auto", data::DocumentMask::automatic},
           {"true", data::DocumentMask::on},
           {"false", data::DocumentMask::off}},
          "attention never crosses a document boundary, positions restart per document, and an end-of-document token "
          "predicts nothing (auto: for chat data)"),
      choice<data::InvalidUtf8>(
          "data.invalid_utf8", [](auto& c) -> auto& { return c.data.filters.invalid_utf8; },
          {{"replace", data::InvalidUtf8::replace},
           {"drop", data::InvalidUtf8::drop},
           {"refuse", data::InvalidUtf8::refuse}},
          "text that is not valid UTF-8: each such byte becomes U+FFFD, its document is dropped, or moe data prepare "
          "stops naming the file and byte (counts printed and in meta.json)"),
      text(
          "data.text_field", [](auto& c) -> auto& { return c.data.filters.text_field; },
          "JSONL corpora (.jsonl, .jsonl.gz, .jsonl.zst): the field holding each record's text"),
      real(
          "data.max_bad_fraction", [](auto& c) -> auto& { return c.data.filters.max_bad_fraction; }, closed(0, 1),
          "share of records (JSONL lines, compressed streams) that may be unreadable, skipped and counted, before "
          "moe data prepare stops naming the first"),
      integer(
          "data.max_document_bytes", [](auto& c) -> auto& { return c.data.filters.max_document_bytes; },
          closed(4096, double(std::int64_t{1} << 40)),
          "a longer document is cut at line ends into parts of at most this size, each a document (bounds memory)"),
      boolean(
          "data.dedup", [](auto& c) -> auto& { return c.data.filters.dedup; },
          "moe data prepare drops exact duplicates (same text after lower-casing and collapsing whitespace)"),
      real(
          "data.near_dup_threshold", [](auto& c) -> auto& { return c.data.filters.near_dup_threshold; }, closed(0, 1),
          "drops near duplicates: estimated Jaccard similarity of word 5-gram shingles (MinHash, LSH) at least this "
          "(0: off)"),
      integer(
          "data.min_words", [](auto& c) -> auto& { return c.data.filters.min_words; }, at_least(0),
          "drops documents with fewer words"),
      real(
          "data.max_symbol_fraction", [](auto& c) -> auto& { return c.data.filters.max_symbol_fraction; }, closed(0, 1),
          "drops documents whose non-space characters are more than this share symbols (1: off)"),
      real(
          "data.max_digit_fraction", [](auto& c) -> auto& { return c.data.filters.max_digit_fraction; }, closed(0, 1),
          "drops documents whose non-space characters are more than this share digits (1: off)"),
      real(
          "data.max_repeated_line_fraction", [](auto& c) -> auto& { return c.data.filters.max_repeated_line_fraction; },
          closed(0, 1), "drops documents with more than this share of lines repeating an earlier one (1: off)"),
      real(
          "data.max_top_bigram_fraction", [](auto& c) -> auto& { return c.data.filters.max_top_bigram_fraction; },
          closed(0, 1),
          "drops documents of 100+ words whose most frequent word bigram covers more than this share of the characters "
          "(1: off)"),
      text(
          "data.quality_model", [](auto& c) -> auto& { return c.data.filters.quality_model; },
          "a fastText classifier (.bin) scoring documents; those below data.quality_threshold are dropped (\"\": off)",
          true),
      text(
          "data.quality_train", [](auto& c) -> auto& { return c.data.filters.quality_train; },
          "labelled lines (__label__NAME text) to train the quality classifier from, saved as data.dir/quality.bin "
          "(\"\": none)",
          true),
      text(
          "data.quality_label", [](auto& c) -> auto& { return c.data.filters.quality_label; },
          "the classifier's label of documents to keep"),
      real(
          "data.quality_threshold", [](auto& c) -> auto& { return c.data.filters.quality_threshold; }, closed(0, 1),
          "keeps documents whose probability of data.quality_label is at least this"),

      integer(AT(parallel.dp), at_least(0), "data-parallel ranks (0: world / (tp * pp))"),
      integer(AT(parallel.tp), at_least(1), "tensor-parallel ranks"),
      integer(AT(parallel.pp), at_least(1), "pipeline stages"),
      list_of<std::int64_t>(
          AT(parallel.pp_layers),
          "blocks per (virtual) pipeline stage, first stage first (empty: balanced by estimated cost)"),
      integer(AT(parallel.virtual_stages), at_least(1),
              "model chunks per pipeline stage: interleaved 1F1B, a bubble this many times smaller for as many more "
              "messages"),
      choice<PipeSchedule>(
          AT(parallel.schedule), {{"1f1b", PipeSchedule::one_f_one_b}, {"dualpipev", PipeSchedule::dualpipev}},
          "pipeline schedule: 1f1b (interleaved with parallel.virtual_stages > 1), or dualpipev "
          "(DeepSeek's DualPipe cut in half: two chunks per stage in a V, weight gradients computed "
          "in the bubble; a third of 1F1B's bubble or less, needs train.grad_accum >= 2 x parallel.pp)"),
      boolean(AT(parallel.split_weight_grads),
              "dualpipev: compute weight gradients apart from the backward, in the bubble (zero-bubble style); a split "
              "backward holds its GEMMs' inputs and output gradients until then (false: whole backwards, more bubble, "
              "less memory)"),
      integer(AT(parallel.ep), at_least(1), "expert-parallel ranks, folded inside dp x tp"),
      integer(AT(parallel.zero), closed(0, 1), "ZeRO stage (0: replicated optimizer, 1: sharded)"),
      real(AT(parallel.bucket_mb), above(0), "size of a gradient all-reduce bucket, MiB"),
      integer(AT(parallel.ranks_per_node), at_least(0),
              "ranks per node (0: as launched, the ranks sharing a machine); more nodes than machines simulate them"),
      choice<DispatchKind>(AT(parallel.dispatch),
                           {{"hierarchical", DispatchKind::hierarchical}, {"flat", DispatchKind::flat}},
                           "expert dispatch across nodes: hierarchical sends a token once to each node holding one "
                           "of its experts and forwards it inside; flat sends it to each rank"),
      boolean(AT(parallel.overlap),
              "the expert dispatch's payload (forward) and output gradient (backward) travel while the shared "
              "experts compute"),
      boolean(AT(parallel.node_reduced_combine),
              "hierarchical dispatch under bf16/fp8: each node's expert outputs for a token are summed (FP32, gated) "
              "before crossing the network, one BF16 row per node instead of one per expert (DeepEP's combine; "
              "no longer bit for bit the flat dispatch's)"),
      integer(AT(parallel.redundant_experts), at_least(0),
              "replica slots per expert-parallel rank, filled with copies of the most loaded experts (EPLB; needs "
              "ep > 1; 0: none)"),
      integer(AT(parallel.rebalance_every), at_least(1),
              "steps between choices of the redundant experts, from the loads measured since the last"),

      text(AT(checkpoint.dir),
           "run directory: step_N.h5 checkpoints and the latest pointer (docs/CHECKPOINT.md); empty: none", true),
      integer(AT(checkpoint.every), at_least(0), "steps between checkpoints (0: at the end only)"),
      integer(AT(checkpoint.keep), at_least(1), "newest checkpoints kept"),
      boolean(AT(checkpoint.resume), "continue from checkpoint.dir/latest when it exists (moe train --fresh: false)"),
      boolean(AT(checkpoint.async),
              "write checkpoints behind the training steps: the step pays for a host copy of this rank's state, "
              "a thread writes it, and it becomes the latest once every rank's writes are on disk"),
      text(AT(checkpoint.init_from), "fine-tune: load weights from this checkpoint file, fresh optimizer and schedule",
           true),
      text_list(AT(checkpoint.drop),
                "tensors of a loaded checkpoint the model may leave out (fnmatch, e.g. 'weights/model.layers.61.*'); "
                "any other it lacks is an error"),

      integer(AT(debug.nan_at_step), at_least(0),
              "fault drill: put a NaN into the gradient at this step (1-based) and the next nan_steps - 1 (0: never)"),
      integer(AT(debug.nan_steps), at_least(1), "fault drill: steps in a row that get the NaN"),
      integer(AT(debug.hang_at_step), at_least(0),
              "fault drill: rank debug.hang_rank stops making progress at this step (0: never)"),
      integer(AT(debug.hang_rank), at_least(0), "fault drill: the rank that hangs"),
      real(AT(debug.link_delay_ms), at_least(0),
           "fault drill and benchmark: every expert all-to-all completes no sooner than this many ms after it "
           "started (a slow link)"),
      integer(AT(debug.slow_checkpoint_ms), at_least(0),
              "drill: with checkpoint.async, each rank's writer waits this many ms before writing (the steps go "
              "on meanwhile; a checkpoint of the state after them would differ)"),
      boolean(AT(debug.collapse_routing),
              "fault drill: every token routed to expert 0 (a collapsed router; model.capacity_factor bounds the "
              "memory it costs, moe plan prints how much)"),

      text(AT(cost.cluster),
           "cluster the cost report prices the run on: NAME (clusters/NAME.yaml beside the config, e.g. h800, h100, "
           "a100, local-cpu) or a .yaml path"),
  };
  return f;
}
#undef AT

const Field* find_field(const std::string& key) {
  for (const auto& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

bool is_section(const std::string& prefix) {
  for (const auto& f : fields())
    if (f.key.rfind(prefix + ".", 0) == 0) return true;
  return false;
}

// ---- Nearest valid key, for "did you mean" ---------------------------------------------

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string leaf(const std::string& key) { return key.substr(key.rfind('.') + 1); }

// Compares whole keys and last components, so "d_model" at the top suggests "model.d_model".
std::string nearest_key(const std::string& key) {
  std::string best;
  std::size_t best_d = std::numeric_limits<std::size_t>::max();
  for (const auto& f : fields()) {
    const std::size_t d = std::min(edit_distance(key, f.key), edit_distance(leaf(key), leaf(f.key)) + 1);
    if (d < best_d) best_d = d, best = f.key;
  }
  return best;
}

[[noreturn]] void unknown_key(const std::string& where, const std::string& key) {
  throw ConfigError(fmt::format("{}: unknown key '{}'; did you mean '{}'? (moe config reference lists every key)",
                                where, key, nearest_key(key)));
}

// ---- Reading ---------------------------------------------------------------------------

std::string where(const std::string& source, const YAML::Mark& m) {
  return m.is_null() ? source : fmt::format("{}:{}", source, m.line + 1);
}

void apply(Config& c, const std::string& key, const YAML::Node& value, const std::string& at) {
  const Field* f = find_field(key);
  if (!f) unknown_key(at, key);
  f->parse(c, value, at);
  c.origin[key] = at;
}

void walk(Config& c, const YAML::Node& map, const std::string& prefix) {
  for (const auto& kv : map) {
    const std::string key = prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>();
    const std::string at = where(c.source, kv.first.Mark());
    if (is_section(key)) {
      if (!kv.second.IsMap()) bad(at, key, "expected a mapping of keys (a section), got a value");
      walk(c, kv.second, key);
    } else {
      apply(c, key, kv.second, at);
    }
  }
}

void apply_override(Config& c, const std::string& kv) {
  const auto eq = kv.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError(fmt::format("--set {}: expected key=value, e.g. --set train.lr=1e-3", kv));
  const std::string key = kv.substr(0, eq), at = fmt::format("--set {}", kv);
  YAML::Node value;
  try {
    // `--set k=` is the empty value, not YAML's null.
    value = eq + 1 == kv.size() ? YAML::Node(std::string()) : YAML::Load(kv.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: cannot parse the value: {}", at, e.msg));
  }
  apply(c, key, value, at);
}

// ---- Cross-key rules -------------------------------------------------------------------

// Long by design: a flat list of independent rules, one check each, in the order of the
// sections they relate.
void validate(const Config& c) {
  // The message names the first key's origin (file:line, --set, or the file for a default).
  auto require = [&c](bool ok, const std::string& key, const std::string& what) {
    if (ok) return;
    auto it = c.origin.find(key);
    throw ConfigError(
        fmt::format("{}: {}: {}", it != c.origin.end() ? it->second : c.source + " (default)", key, what));
  };
  const auto& m = c.model;
  require(data::valid_chat_template(c.data.chat.message) || c.data.chat.message == "tokenizer" ||
              data::is_jinja(c.data.chat.message),
          "data.chat_template", "must hold {role} and then {content}, once each, or be a Jinja template, or tokenizer");
  const auto& src = c.data.sources;
  require(
      src.empty() || std::any_of(src.begin(), src.end(), [&](const DataSource& s) { return s.dir == c.data.dir; }),
      "data.sources",
      fmt::format("data.dir = {} is not one of them (its tokenizer and validation split are the run's)", c.data.dir));
  for (std::size_t i = 0; i < src.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      require(src[i].dir != src[j].dir, "data.sources", fmt::format("{} is listed twice", src[i].dir));
  require(c.model.lora.rank == 0 || !c.model.lora.targets.empty(), "lora.targets", "is empty: LoRA adapts nothing");
  require(c.data.filters.quality_model.empty() || c.data.filters.quality_train.empty(), "data.quality_train",
          "and data.quality_model are both set: train a classifier or read one, not both");
  // Fault drills that could never fire would pass a drill that tested nothing.
  const auto& d = c.debug;
  require(d.nan_at_step <= c.train.steps, "debug.nan_at_step",
          fmt::format("{} is past train.steps = {}: the drill would never fire", d.nan_at_step, c.train.steps));
  require(d.hang_at_step <= c.train.steps, "debug.hang_at_step",
          fmt::format("{} is past train.steps = {}: the drill would never fire", d.hang_at_step, c.train.steps));
  require(m.n_heads % m.n_kv_heads == 0, "model.n_kv_heads",
          fmt::format("{} does not divide model.n_heads = {}", m.n_kv_heads, m.n_heads));
  if (m.attention == AttentionType::gqa) {
    require(m.d_model % m.n_heads == 0, "model.n_heads",
            fmt::format("{} does not divide model.d_model = {}", m.n_heads, m.d_model));
    require((m.d_model / m.n_heads) % 2 == 0, "model.n_heads",
            fmt::format("head_dim = d_model / n_heads = {} must be even for RoPE", m.d_model / m.n_heads));
  } else {
    require(m.qk_rope_head_dim % 2 == 0, "model.qk_rope_head_dim",
            fmt::format("{} must be even for RoPE", m.qk_rope_head_dim));
  }
  require(m.dense_layers <= m.n_layers, "model.dense_layers",
          fmt::format("{} exceeds model.n_layers = {}", m.dense_layers, m.n_layers));
  if (m.routed_experts > 0 && m.dense_layers < m.n_layers) {
    require(m.top_k <= m.routed_experts, "model.top_k",
            fmt::format("{} exceeds model.routed_experts = {}", m.top_k, m.routed_experts));
    require(m.routed_experts % m.n_groups == 0, "model.n_groups",
            fmt::format("{} does not divide model.routed_experts = {}", m.n_groups, m.routed_experts));
    require(m.topk_groups <= m.n_groups, "model.topk_groups",
            fmt::format("{} exceeds model.n_groups = {}", m.topk_groups, m.n_groups));
    const auto reachable = m.topk_groups * (m.routed_experts / m.n_groups);
    require(
        m.top_k <= reachable, "model.top_k",
        fmt::format("{} exceeds the {} experts in model.topk_groups = {} groups", m.top_k, reachable, m.topk_groups));
    require(m.routed_experts % c.parallel.ep == 0, "parallel.ep",
            fmt::format("{} does not divide model.routed_experts = {}", c.parallel.ep, m.routed_experts));
  }
  if (const auto r = c.parallel.redundant_experts; r > 0) {
    require(
        c.parallel.ep > 1, "parallel.redundant_experts",
        fmt::format("{} slots a rank need parallel.ep > 1: replicas share a hot expert's rows with other ranks", r));
    require(
        c.model.lora.rank == 0, "parallel.redundant_experts",
        fmt::format("{} slots a rank with LoRA (lora.rank = {}): replicas do not carry adapters; set one of them to 0",
                    r, c.model.lora.rank));
  }
  require(c.train.min_lr <= c.train.lr, "train.min_lr",
          fmt::format("{} exceeds train.lr = {}", c.train.min_lr, c.train.lr));
  require(m.n_heads % c.parallel.tp == 0 && (m.attention == AttentionType::mla || m.n_kv_heads % c.parallel.tp == 0),
          "parallel.tp",
          fmt::format("{} must divide model.n_heads = {} and model.n_kv_heads = {}", c.parallel.tp, m.n_heads,
                      m.n_kv_heads));
  require(c.parallel.pp <= m.n_layers, "parallel.pp",
          fmt::format("{} stages exceed model.n_layers = {}; each stage needs a block", c.parallel.pp, m.n_layers));
  const std::int64_t v = c.parallel.virtual_stages, stages = c.parallel.pp * c.parallel.chunks();
  if (c.parallel.schedule == PipeSchedule::dualpipev) {
    require(c.parallel.pp > 1, "parallel.schedule", "dualpipev needs a pipeline (parallel.pp > 1)");
    require(v == 1, "parallel.virtual_stages",
            fmt::format(
                "{} with parallel.schedule = dualpipev, which places two chunks per stage itself; leave it at 1", v));
    require(stages <= m.n_layers, "parallel.schedule",
            fmt::format("dualpipev splits the model into 2 x parallel.pp = {} chunks, more than model.n_layers = {}",
                        stages, m.n_layers));
    require(
        c.train.grad_accum >= stages, "train.grad_accum",
        fmt::format("{} micro-batches, but dualpipev needs at least 2 x parallel.pp = {}", c.train.grad_accum, stages));
  }
  if (v > 1) {
    require(c.parallel.pp > 1, "parallel.virtual_stages", fmt::format("{} needs a pipeline (parallel.pp > 1)", v));
    require(stages <= m.n_layers, "parallel.virtual_stages",
            fmt::format("{} x parallel.pp = {} virtual stages exceed model.n_layers = {}", v, stages, m.n_layers));
    require(
        c.train.grad_accum % c.parallel.pp == 0, "parallel.virtual_stages",
        fmt::format("the interleaved schedule runs micro-batches in groups of parallel.pp = {}; train.grad_accum = {} "
                    "is not a multiple",
                    c.parallel.pp, c.train.grad_accum));
  }
  if (m.dense_layers > 0 || m.routed_experts == 0)
    require(m.ffn_hidden % c.parallel.tp == 0, "parallel.tp",
            fmt::format("{} must divide model.ffn_hidden = {}", c.parallel.tp, m.ffn_hidden));
  require((m.shared_experts * m.expert_hidden) % c.parallel.tp == 0, "parallel.tp",
          fmt::format("{} must divide the shared experts' width {} x {}", c.parallel.tp, m.shared_experts,
                      m.expert_hidden));
  if (const auto& split = c.parallel.pp_layers; !split.empty()) {
    std::int64_t sum = 0;
    for (auto n : split) sum += n;
    require(
        std::int64_t(split.size()) == stages && sum == m.n_layers, "parallel.pp_layers",
        fmt::format("{} stages holding {} blocks, but parallel.pp x its chunks (parallel.virtual_stages, or 2 under "
                    "dualpipev) = {} and model.n_layers = {}; give one count per (virtual) stage summing to the layers",
                    split.size(), sum, stages, m.n_layers));
  }
}

}  // namespace

Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides) {
  Config c;
  c.source = source;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: invalid YAML: {}", where(source, e.mark), e.msg));
  }
  if (root.IsMap()) walk(c, root, "");
  else if (!root.IsNull()) throw ConfigError(fmt::format("{}: expected a mapping of keys at the top level", source));
  for (const auto& kv : overrides) apply_override(c, kv);
  validate(c);
  return c;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path);
  if (!in) throw ConfigError(fmt::format("{}: cannot open the config file", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, overrides);
}

std::vector<std::pair<std::string, std::string>> config_values(const Config& c) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& f : fields()) out.emplace_back(f.key, f.show(c));
  return out;
}

std::string config_to_yaml(const Config& c) {
  std::string out, section;
  for (const auto& [key, value] : config_values(c)) {
    const auto dot = key.find('.');
    const std::string sec = dot == std::string::npos ? "" : key.substr(0, dot);
    if (sec != section && !sec.empty()) out += sec + ":\n";
    section = sec;
    out += fmt::format("{}{}: {}\n", sec.empty() ? "" : "  ", leaf(key), value);
  }
  return out;
}

std::string config_reference_markdown() {
  const Config defaults;
  std::string out = "| key | type | default | meaning |\n| --- | --- | --- | --- |\n";
  for (const auto& f : fields())
    out += fmt::format("| `{}` | {} | `{}` | {} |\n", f.key, f.type, f.show(defaults), f.doc);
  return out;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const auto& f : fields()) keys.push_back(f.key);
  return keys;
}

}  // namespace moe
