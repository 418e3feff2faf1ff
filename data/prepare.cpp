#include "data/prepare.h"

#include <xxhash.h>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <regex>
#include <sstream>

#include "data/chat.h"
#include "data/permutation.h"
#include "data/prepare_parts.h"
#include "data/corpus.h"
#include "data/dir_lock.h"
#include "data/quality.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {
using detail::ShardWriter;

// Feeds SentencePiece its lines.
class Lines : public sentencepiece::SentenceIterator {
 public:
  explicit Lines(std::vector<std::string> lines) : lines_(std::move(lines)) {}
  bool done() const override { return i_ >= lines_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return lines_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::vector<std::string> lines_;
  std::size_t i_ = 0;
};

void check(const sentencepiece::util::Status& s, const std::string& what) {
  if (!s.ok()) throw DataError(fmt::format("{}: {}", what, s.ToString()));
}

std::string train_tokenizer(const PrepareOptions& opt, std::vector<std::string> training_lines) {
  std::string model;
  Lines lines(std::move(training_lines));
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(opt.seed));
  check(sentencepiece::SentencePieceTrainer::Train({{"vocab_size", std::to_string(opt.vocab_size)},
                                                    {"model_type", "unigram"},
                                                    {"character_coverage", "0.9995"},
                                                    {"byte_fallback", "true"},
                                                    // as Llama's: text as it is (no NFKC, whitespace
                                                    // runs kept), so that transformers' fast
                                                    // LlamaTokenizer reproduces it exactly
                                                    {"normalization_rule_name", "identity"},
                                                    {"remove_extra_whitespaces", "false"},
                                                    {"unk_id", "0"},
                                                    {"eos_id", "1"},
                                                    {"bos_id", "-1"},
                                                    {"pad_id", "-1"},
                                                    {"num_threads", "1"},
                                                    {"minloglevel", "2"},
                                                    {"input_sentence_size", "2000000"},
                                                    {"shuffle_input_sentence", "false"}},
                                                   &lines, &model),
        fmt::format("{}: SentencePiece training (model.vocab_size = {})", opt.corpus, opt.vocab_size));
  return model;
}

// A document's ids, then end-of-document; with a mask, 1 for each token whose bytes overlap a
// counted span (the offsets of the whole text's encoding, as transformers' assistant masks:
// a piece may join the header's last byte to the answer's first, "\n4", and then counts), and
// for end-of-document where the record says so.
void encode(const Tokenizer& tok, const ChatText& doc, bool masked, std::vector<std::uint32_t>& ids,
            std::vector<std::uint32_t>& mask) {
  ids.clear(), mask.clear();
  if (!masked) {
    for (int id : tok.encode(doc.text)) ids.push_back(static_cast<std::uint32_t>(id));
  } else {
    for (const auto& piece : tok.encode_pieces(doc.text)) {
      ids.push_back(static_cast<std::uint32_t>(piece.id));
      const bool in = std::any_of(doc.counted.begin(), doc.counted.end(),
                                  [&](const auto& r) { return piece.end > r.first && piece.begin < r.second; });
      mask.push_back(in ? 1 : 0);
    }
    mask.push_back(doc.counts_end ? 1 : 0);
  }
  ids.push_back(static_cast<std::uint32_t>(tok.end_of_document()));
}

// The conversations of one split into shards, aligned to windows of opt.align tokens: one
// that does not fit in what is left of the window starts the next one (the gap filled with
// end-of-document ids that count nowhere), one longer than a window is cut to it; so no
// conversation is split from its prompt.
void write_chat_split(const PrepareOptions& opt, const Tokenizer& tok, const std::vector<ChatText>& docs,
                      const std::vector<bool>& is_val, bool val, PrepareReport& rep, std::vector<double>& counts) {
  const std::string split = val ? "val" : "train";
  ShardWriter tokens(opt, split, static_cast<std::uint64_t>(opt.vocab_size)), mask(opt, mask_split(split), 2);
  std::uint64_t& total = val ? rep.val_tokens : rep.train_tokens;
  const auto W = static_cast<std::uint64_t>(opt.align);
  const auto eod = static_cast<std::uint32_t>(tok.end_of_document());
  std::vector<std::uint32_t> ids, m;
  auto put = [&](std::uint32_t id, std::uint32_t counted) {
    tokens.add(id);
    mask.add(counted), rep.target_tokens += counted && !val;
    if (!val) counts[id] += 1;
    ++total;
  };
  for (std::size_t i = 0; i < docs.size(); ++i) {
    if (is_val[i] != val) continue;
    encode(tok, docs[i], true, ids, m);
    if (W > 0) {
      if (ids.size() > W) ids.resize(W), m.resize(W), ++rep.truncated;
      if (total % W + ids.size() > W)
        while (total % W != 0) put(eod, 0);
    }
    for (std::size_t k = 0; k < ids.size(); ++k) put(ids[k], m[k]);
  }
  if (W > 0) {  // the last window filled, and one token more: its last target
    while (total % W != 0) put(eod, 0);
    put(eod, 0);
  }
  tokens.close();
  mask.close();
}

}  // namespace

void detail::write_meta(const PrepareOptions& opt, const PrepareReport& rep, const Tokenizer& tok) {
  nlohmann::json meta = {{"format", "moe-shards"},
                         {"version", kShardVersion},
                         {"corpus", opt.corpus},
                         {"vocab_size", opt.vocab_size},
                         {"end_of_document_id", tok.end_of_document()},
                         {"tokenizer", fs::path(Tokenizer::in_dir(opt.out_dir)).filename().string()},
                         {"tokenizer_xxh64", tokenizer_digest(opt.out_dir)},
                         {"documents", rep.documents},
                         {"val_documents", rep.val_documents},
                         {"train_tokens", rep.train_tokens},
                         {"val_tokens", rep.val_tokens},
                         {"unigram_entropy_nats", rep.unigram_entropy},
                         {"seed", opt.seed},
                         {"filters", rep.filters.json()}};
  if (rep.chat)  // chat data: loss masks beside the tokens, documents aligned to windows
    meta.update({{"loss_mask", true},
                 {"aligned_seq_len", opt.align},
                 {"chat_template", rep.chat_template},
                 {"loss_on", opt.chat.loss_on_all ? "all" : "assistant"},
                 {"target_tokens", rep.target_tokens},
                 {"truncated_documents", rep.truncated}});
  const auto tmp = fs::path(opt.out_dir) / "meta.json.tmp";
  std::ofstream(tmp) << meta.dump(2) << "\n";
  fs::rename(tmp, fs::path(opt.out_dir) / "meta.json");
}

namespace {

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in, DataError,
            "{}: {} not found; point it at a prepared directory's tokenizer.model or a model's "
            "tokenizer.json",
            path, what);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

// The tokenizer in opt.out_dir: trained on `lines` (of the training split only), or reused (fine-tuning
// data must keep the base model's vocabulary): a tokenizer.model, or a Hugging Face
// tokenizer.json with its tokenizer_config.json (and chat_template.jinja where it has one:
// moe generate --chat reads the template here). The other kind's files, ours from an earlier
// preparation, go.
Tokenizer detail::place_tokenizer(const PrepareOptions& opt, const detail::TrainingLines& lines) {
  const fs::path out(opt.out_dir);
  const bool hf = !opt.tokenizer.empty() && Tokenizer::is_hf(opt.tokenizer);
  for (const char* name :
       hf ? std::vector<const char*>{"tokenizer.model", "chat_template.jinja"}
          : std::vector<const char*>{"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"})
    fs::remove(out / name);
  if (hf) {
    Tokenizer theirs(opt.tokenizer);  // read and checked where the user put it, then copied as it is
    MOE_CHECK(theirs.size() <= opt.vocab_size, DataError,
              "{}: the tokenizer's ids reach {}, past model.vocab_size = {}; set model.vocab_size to the model's",
              opt.tokenizer, theirs.size() - 1, opt.vocab_size);
    const fs::path config = fs::path(opt.tokenizer).parent_path() / "tokenizer_config.json";
    std::ofstream(out / "tokenizer.json", std::ios::binary) << read_file(opt.tokenizer, "data.tokenizer");
    std::ofstream(out / "tokenizer_config.json") << read_file(config.string(), "data.tokenizer's config");
    if (const fs::path jinja = fs::path(opt.tokenizer).parent_path() / "chat_template.jinja"; fs::exists(jinja))
      std::ofstream(out / "chat_template.jinja", std::ios::binary) << read_file(jinja.string(), "chat_template.jinja");
    return theirs;
  }
  const std::string model =
      opt.tokenizer.empty() ? train_tokenizer(opt, lines()) : read_file(opt.tokenizer, "data.tokenizer");
  std::ofstream(out / "tokenizer.model", std::ios::binary) << model;
  Tokenizer tok((out / "tokenizer.model").string());
  MOE_CHECK(tok.size() == opt.vocab_size, DataError, "{}: the tokenizer has {} pieces, model.vocab_size = {}",
            opt.tokenizer, tok.size(), opt.vocab_size);
  return tok;
}

bool its_own_file(const std::string& name) {
  static const std::regex ours(
      R"((meta\.json|tokenizer\.model|tokenizer\.json|tokenizer_config\.json|chat_template\.jinja|quality\.bin|(mask_)?(train|val)_\d{5}\.bin)(\.tmp)?|\.moe\.lock|\.prepare)");
  return std::regex_match(name, ours);
}

std::string tokenizer_digest(const std::string& dir) {
  std::ifstream in(Tokenizer::in_dir(dir), std::ios::binary);
  if (!in) return "";
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fmt::format("{:016x}", XXH64(bytes.data(), bytes.size(), 0));
}

namespace detail {

void append_lines(const std::string& doc, std::vector<std::string>& lines) {
  std::istringstream in(doc);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) lines.push_back(std::move(l));
}

void remove_previous_output(const std::string& out_dir) {
  fs::remove(fs::path(out_dir) / "meta.json");  // incomplete until rewritten at the end
  static const std::regex shard(R"((mask_)?(train|val)_\d{5}\.bin(\.tmp)?)");
  for (const auto& e : fs::directory_iterator(out_dir))  // the previous preparation's shards only
    if (std::regex_match(e.path().filename().string(), shard)) fs::remove(e.path());
}

void ShardWriter::flush() {
  write_shard((fs::path(opt_.out_dir) / fmt::format("{}_{:05d}.bin", split_, shard_++)).string(), buf_, vocab_);
  buf_.clear();
}

double unigram_entropy(const std::vector<double>& counts, std::uint64_t tokens) {
  double h = 0;
  for (double c : counts)
    if (c > 0) h -= c / double(tokens) * std::log(c / double(tokens));
  return h;
}

void check_out_dir(const PrepareOptions& opt) {
  std::vector<std::string> others;
  for (const auto& e : fs::directory_iterator(opt.out_dir))
    if (!its_own_file(e.path().filename().string())) others.push_back(e.path().filename().string());
  MOE_CHECK(others.empty() || opt.allow_other_files, DataError,
            "{}: holds {} file(s) moe data prepare did not write (e.g. {}); prepare into an empty directory, or "
            "--force to write beside them (they are left alone)",
            opt.out_dir, others.size(), others.front());
}

void check_val_tokens(const PrepareOptions& opt, const PrepareReport& rep) {
  MOE_CHECK(rep.val_tokens >= opt.min_val_tokens, DataError,
            "{}: data.val_fraction = {} held out {} documents, {} tokens: fewer than one sequence of {}; raise "
            "data.val_fraction or give a larger corpus",
            opt.corpus, opt.val_fraction, rep.val_documents, rep.val_tokens, opt.min_val_tokens);
}

}  // namespace detail

namespace {

// Chat data, read whole (conversations are few beside pre-training text; the filters are for
// web text and do not apply).
PrepareReport prepare_chat(const PrepareOptions& opt) {
  PrepareReport rep;
  const ChatRenderer chat(opt.chat, opt.tokenizer);
  const std::vector<ChatText> docs = read_chat_corpus(opt.corpus, chat);
  rep.chat = true, rep.chat_template = chat.source();
  rep.filters.documents = rep.filters.kept = rep.documents = static_cast<std::int64_t>(docs.size());
  const auto n = static_cast<std::uint64_t>(docs.size());
  rep.val_documents = static_cast<std::int64_t>(std::llround(opt.val_fraction * double(n)));
  const SeededPermutation place(n, opt.seed);  // held out: the documents placed first
  std::vector<bool> is_val(docs.size());
  for (std::uint64_t i = 0; i < n; ++i) is_val[i] = place(i) < std::uint64_t(rep.val_documents);
  detail::remove_previous_output(opt.out_dir);
  const Tokenizer tok = detail::place_tokenizer(opt, [&] {
    std::vector<std::string> lines;
    for (std::size_t i = 0; i < docs.size(); ++i)
      if (!is_val[i]) detail::append_lines(docs[i].text, lines);
    return lines;
  });
  std::vector<double> counts(static_cast<std::size_t>(opt.vocab_size), 0.0);
  for (const bool val : {false, true}) write_chat_split(opt, tok, docs, is_val, val, rep, counts);
  rep.unigram_entropy = detail::unigram_entropy(counts, rep.train_tokens);
  detail::check_val_tokens(opt, rep);  // (before meta.json: without it the directory reads as unprepared)
  detail::write_meta(opt, rep, tok);
  return rep;
}

}  // namespace

PrepareReport prepare(const PrepareOptions& opt, Communicator* comm) {
  SelfCommunicator self;
  Communicator& world = comm ? *comm : self;
  if (!is_chat_corpus(opt.corpus)) return detail::prepare_text(opt, world);
  PrepareReport rep;
  if (world.rank() == 0) {
    const DirLock lock(opt.out_dir, "data.dir");  // one prepare at a time
    detail::check_out_dir(opt);
    rep = prepare_chat(opt);
  }
  world.barrier();
  return rep;
}

}  // namespace moe::data
