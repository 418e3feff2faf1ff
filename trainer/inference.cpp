#include "trainer/inference.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "checkpoint/checkpoint.h"
#include "data/chat.h"
#include "data/corpus.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "model/hf_names.h"
#include "trainer/run_meta.h"

namespace moe {
namespace {

std::string tokenizer_path(const std::string& checkpoint, const Config& cfg, const std::string& given) {
  if (!given.empty()) return given;
  const std::string run = data::Tokenizer::in_dir(cfg.data.dir);
  MOE_CHECK(std::filesystem::exists(run), DataError,
            "{}: its run's tokenizer {} is not here; give the tokenizer.model or tokenizer.json it was trained with "
            "(--tokenizer)",
            checkpoint, run);
  return run;
}

// Loss sums of `count` windows of T tokens (tokens, targets, positions as the loader fills them).
Transformer::Loss forward_windows(InferenceModel& m, const data::Batch& b, std::int64_t count, std::int64_t T) {
  return m.model->forward(b.tokens, b.targets, count, T, b.positions);
}

// Every window of a stream, micro-batch by micro-batch, with the run's masking.
Perplexity perplexity(InferenceModel& m, const data::TokenStream& stream, data::Masking masking, std::int64_t windows) {
  const std::int64_t T = m.cfg.model.seq_len, mb = std::max<std::int64_t>(m.cfg.train.micro_batch, 1);
  data::Loader loader(stream, T, 0, 1, masking);
  Perplexity p;
  p.windows = windows > 0 ? std::min(windows, loader.windows()) : loader.windows();
  double ce = 0;
  for (std::int64_t w = 0; w < p.windows; w += mb) {
    const std::int64_t n = std::min(mb, p.windows - w);
    data::Batch b(n, T, masking.documents);
    loader.fill_in_order(w, n, b);
    const auto loss = forward_windows(m, b, n, T);
    ce += loss.ce_sum, p.tokens += loss.tokens;
  }
  p.loss = ce / double(std::max<std::int64_t>(p.tokens, 1));
  p.perplexity = std::exp(p.loss);
  return p;
}

// log-softmax of row `row` of logits (R,V), in double.
std::vector<double> log_softmax_row(const Tensor& logits_any, std::int64_t row) {
  const Tensor logits = to_host(logits_any);
  const std::int64_t V = logits.size(1);
  const float* r = logits.data<float>() + row * V;
  const double top = *std::max_element(r, r + V);
  double sum = 0;
  for (std::int64_t v = 0; v < V; ++v) sum += std::exp(double(r[v]) - top);
  std::vector<double> out(static_cast<std::size_t>(V));
  for (std::int64_t v = 0; v < V; ++v) out[std::size_t(v)] = double(r[v]) - top - std::log(sum);
  return out;
}

// The next token's log-probabilities after ids by the KV cache: a decode step of the tokens
// the cache does not hold yet where it holds a prefix of ids, else a fresh prefill; past
// model.seq_len tokens, the window recomputed (next_log_probs).
class Decoder {
 public:
  Decoder(InferenceModel& m, bool on) : m_(m), on_(on) {
    if (on_) cache_ = m.model->new_cache(m.cfg.model.seq_len);
  }
  std::vector<double> next(const std::vector<int>& ids) {
    if (!on_ || ids.empty() || std::int64_t(ids.size()) > cache_.capacity) return next_log_probs(m_, ids);
    const bool prefix = held_.size() < ids.size() && std::equal(held_.begin(), held_.end(), ids.begin());
    if (!prefix) held_.clear(), cache_.length = 0;
    const std::vector<int> fresh(ids.begin() + static_cast<std::ptrdiff_t>(held_.size()), ids.end());
    Tensor tokens = Tensor::empty({std::int64_t(fresh.size())}, DType::i32);
    std::copy(fresh.begin(), fresh.end(), tokens.data<std::int32_t>());
    const Tensor logits = m_.model->decode(tokens, cache_);
    held_ = ids;
    return log_softmax_row(logits, logits.size(0) - 1);
  }

 private:
  InferenceModel& m_;
  bool on_;
  KvCache cache_;
  std::vector<int> held_;  // the tokens the cache holds
};

// One draw in [0, 1) from 53 bits of the generator: the same on every platform.
double uniform(std::mt19937_64& rng) { return double(rng() >> 11) * 0x1.0p-53; }

int sample(const std::vector<double>& log_probs, const Sampling& s, std::mt19937_64& rng) {
  const auto V = static_cast<int>(log_probs.size());
  if (s.temperature <= 0) return int(std::max_element(log_probs.begin(), log_probs.end()) - log_probs.begin());
  std::vector<int> order(static_cast<std::size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return log_probs[std::size_t(a)] > log_probs[std::size_t(b)]; });
  const double top = log_probs[std::size_t(order[0])];
  std::vector<double> p;
  double total = 0;
  for (int id : order) p.push_back(std::exp((log_probs[std::size_t(id)] - top) / s.temperature)), total += p.back();
  std::size_t keep = s.top_k > 0 ? std::min<std::size_t>(std::size_t(s.top_k), p.size()) : p.size();
  if (s.top_p < 1) {  // the fewest most likely tokens whose probability reaches top_p
    double mass = 0;
    for (std::size_t i = 0; i < keep; ++i)
      if ((mass += p[i] / total) >= s.top_p) {
        keep = i + 1;
        break;
      }
  }
  const double kept = std::accumulate(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(keep), 0.0);
  double u = uniform(rng) * kept;
  for (std::size_t i = 0; i < keep; ++i)
    if ((u -= p[i]) < 0) return order[i];
  return order[keep - 1];
}

}  // namespace

InferenceModel load_inference(const std::string& checkpoint, const std::string& tokenizer) {
  const RunMeta meta = read_run_meta(checkpoint);
  Config cfg = parse_config(meta.config_yaml, checkpoint + " (its config)");
  auto model = std::make_unique<Transformer>(cfg.model);
  std::map<std::string, Tensor> tensors = ckpt::read_group(checkpoint, "weights");
  for (auto& [name, t] : ckpt::read_group(checkpoint, "buffers")) tensors.emplace(name, std::move(t));
  for (NamedTensor& t : hf_tensors(*model)) {
    const auto it = tensors.find(t.name);
    MOE_CHECK(it != tensors.end(), CheckpointError, "{}: has no {} that its config's model needs", checkpoint, t.name);
    t.value.copy_from(it->second);
  }
  data::Tokenizer tok(tokenizer_path(checkpoint, cfg, tokenizer));
  // A tokenizer.json may use fewer ids than the model's (padded) vocabulary.
  MOE_CHECK(
      data::Tokenizer::is_hf(tok.path()) ? tok.size() <= cfg.model.vocab_size : tok.size() == cfg.model.vocab_size,
      DataError, "{}: {} ids, the model's vocabulary is {}", tok.path(), tok.size(), cfg.model.vocab_size);
  return {checkpoint, std::move(cfg), std::move(model), std::move(tok)};
}

std::vector<double> next_log_probs(InferenceModel& m, const std::vector<int>& ids) {
  const std::vector<int> start = {m.tokenizer.end_of_document()};  // an empty prompt: the start of a document
  const std::vector<int>& all = ids.empty() ? start : ids;
  const auto T = std::min<std::int64_t>(static_cast<std::int64_t>(all.size()), m.cfg.model.seq_len);
  Tensor tokens = Tensor::empty({T}, DType::i32), targets = Tensor::empty({T}, DType::i32);
  std::copy(all.end() - T, all.end(), tokens.data<std::int32_t>());
  std::fill_n(targets.data<std::int32_t>(), T, -1);
  m.model->forward(tokens, targets, 1, T);
  return log_softmax_row(m.model->take_saved().head.logits, T - 1);  // (T, V): the last row
}

std::vector<int> generate(InferenceModel& m, const std::vector<int>& prompt, const Sampling& s,
                          const std::function<void(const std::vector<int>&)>& on_token) {
  std::mt19937_64 rng(s.seed);
  Decoder decoder(m, s.kv_cache);
  std::vector<int> ids = prompt, out;
  for (std::int64_t i = 0; i < s.max_new_tokens; ++i) {
    std::vector<double> log_probs = decoder.next(ids);
    const int eod = m.tokenizer.end_of_document();
    if (i < s.min_new_tokens) log_probs[std::size_t(eod)] = -INFINITY;
    const int next = sample(log_probs, s, rng);
    if (next == eod) break;
    ids.push_back(next), out.push_back(next);
    if (on_token) on_token(out);
  }
  return out;
}

std::string chat_prompt(const InferenceModel& m, const std::string& user_message) {
  // (an HF tokenizer's template: the tokenizer_config.json moe data prepare copied into data.dir)
  const data::ChatRenderer chat(m.cfg.data.chat, data::Tokenizer::in_dir(m.cfg.data.dir));
  return chat.render({{"user", user_message}}, /*generation_prompt=*/true).text;
}

Perplexity perplexity_on_split(InferenceModel& m, const std::string& dir, const std::string& split,
                               std::int64_t windows) {
  const data::PreparedSplit data(dir, split, static_cast<std::uint64_t>(m.cfg.model.vocab_size), m.cfg.model.seq_len);
  return perplexity(m, data.tokens(), data.masking(m.cfg.data.document_mask), windows);
}

Perplexity perplexity_on_text(InferenceModel& m, const std::string& path) {
  std::vector<std::int32_t> ids;
  for (const std::string& doc : data::read_documents(path, m.cfg.data.filters)) {
    for (int id : m.tokenizer.encode(doc)) ids.push_back(id);
    ids.push_back(m.tokenizer.end_of_document());
  }
  const data::TokenStream stream(std::move(ids), path);
  const bool documents = data::document_masking(m.cfg.data.document_mask, /*chat=*/false);
  return perplexity(m, stream, {.loss_mask = nullptr, .documents = documents}, 0);
}

MultipleChoice multiple_choice(InferenceModel& m, const std::string& path) {
  std::ifstream in(path);
  MOE_CHECK(in, DataError, "{}: cannot read the task", path);
  MultipleChoice r;
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const auto q = nlohmann::json::parse(line, nullptr, false);
    const bool ok = q.is_object() && q.contains("context") && q["context"].is_string() && q.contains("choices") &&
                    q["choices"].is_array() && !q["choices"].empty() && q.contains("answer") &&
                    q["answer"].is_number_integer() && q["answer"].get<std::int64_t>() >= 0 &&
                    q["answer"].get<std::size_t>() < q["choices"].size();
    MOE_CHECK(ok, DataError,
              "{}:{}: expected {{\"context\": text, \"choices\": [text, ...], \"answer\": index of a choice}}", path,
              n);
    const std::string context = q["context"];
    const std::size_t context_ids = m.tokenizer.encode(context).size();
    std::vector<double> ll, ll_norm;
    for (const auto& c : q["choices"]) {
      MOE_CHECK(c.is_string() && !c.get<std::string>().empty(), DataError, "{}:{}: a choice must be a non-empty text",
                path, n);
      std::vector<int> whole = m.tokenizer.encode(context + c.get<std::string>());
      const std::size_t first = std::min(context_ids, whole.size() - 1);  // the choice's first token
      // The last seq_len + 1 tokens: inputs all but the last, targets the choice's tokens.
      const std::size_t begin =
          whole.size() > std::size_t(m.cfg.model.seq_len) + 1 ? whole.size() - std::size_t(m.cfg.model.seq_len) - 1 : 0;
      const auto T = static_cast<std::int64_t>(whole.size() - begin - 1);
      Tensor tokens = Tensor::empty({T}, DType::i32), targets = Tensor::empty({T}, DType::i32);
      for (std::int64_t t = 0; t < T; ++t) {
        const std::size_t at = begin + std::size_t(t);
        tokens.data<std::int32_t>()[t] = whole[at];
        targets.data<std::int32_t>()[t] = at + 1 >= first ? whole[at + 1] : -1;
      }
      ll.push_back(-m.model->forward(tokens, targets, 1, T).ce_sum);
      ll_norm.push_back(ll.back() / double(c.get<std::string>().size()));
    }
    const auto answer = q["answer"].get<std::size_t>();
    r.log_likelihoods.push_back(ll);
    r.accuracy += std::size_t(std::max_element(ll.begin(), ll.end()) - ll.begin()) == answer;
    r.accuracy_norm += std::size_t(std::max_element(ll_norm.begin(), ll_norm.end()) - ll_norm.begin()) == answer;
    ++r.questions;
  }
  MOE_CHECK(r.questions > 0, DataError, "{}: no questions (JSONL: one a line)", path);
  r.accuracy /= double(r.questions), r.accuracy_norm /= double(r.questions);
  return r;
}

}  // namespace moe
