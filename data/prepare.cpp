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
#include "data/corpus.h"
#include "data/dir_lock.h"
#include "data/quality.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {

// Feeds SentencePiece the training documents line by line (it trains on sentences).
class Lines : public sentencepiece::SentenceIterator {
 public:
  explicit Lines(const std::vector<const std::string*>& docs) {
    for (const auto* d : docs) {
      std::istringstream in(*d);
      for (std::string l; std::getline(in, l);)
        if (!l.empty()) lines_.push_back(std::move(l));
    }
  }
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

// The documents of the corpus: chat records rendered with their counted spans, or the
// filtered text documents whole (no mask).
struct Documents {
  std::vector<ChatText> docs;
  bool chat = false;
};
// The quality classifier over the documents the rules kept: trained here from
// data.quality_train (saved as out_dir/quality.bin) or read from data.quality_model.
void select_quality(const PrepareOptions& opt, const std::vector<std::string>& all, std::vector<std::size_t>& keep,
                    FilterReport& filters) {
  const FilterOptions& f = opt.filters;
  if (f.quality_model.empty() && f.quality_train.empty()) return;
  std::string model = f.quality_model;
  if (model.empty()) {
    model = (fs::path(opt.out_dir) / "quality.bin").string();
    QualityClassifier::train(f.quality_train, model, opt.seed);
  }
  const QualityClassifier q(model, f.quality_label);
  filters.quality_model = model;
  filters.quality_histogram.assign(10, 0);
  std::vector<std::size_t> good;
  for (std::size_t i : keep) {
    const double s = q.score(all[i]);
    ++filters.quality_histogram[std::min<std::size_t>(9, static_cast<std::size_t>(s * 10))];
    if (s >= f.quality_threshold) good.push_back(i);
  }
  filters.low_quality = static_cast<std::int64_t>(keep.size() - good.size());
  filters.kept -= filters.low_quality;
  keep = std::move(good);
}

Documents read_corpus(const PrepareOptions& opt, FilterReport& filters) {
  if (is_chat_corpus(opt.corpus)) {  // instruction data is taken as given: the filters are for web text
    Documents d{read_chat_corpus(opt.corpus, opt.chat), true};
    filters.documents = filters.kept = static_cast<std::int64_t>(d.docs.size());
    return d;
  }
  ReadReport read;
  auto all = read_documents(opt.corpus, opt.filters, &read);
  auto keep = filter_documents(all, opt.filters, filters);
  select_quality(opt, all, keep, filters);
  filters.read = read;
  filters.documents += read.utf8.dropped;
  Documents d;
  d.docs.reserve(keep.size());
  for (std::size_t i : keep) d.docs.push_back({std::move(all[i]), {}, true});
  return d;
}

// The training documents' texts, line by line, for SentencePiece.
std::string train_tokenizer(const PrepareOptions& opt, const std::vector<const std::string*>& train_docs) {
  std::string model;
  Lines lines(train_docs);
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

// One split's token (and mask) shards: `prefix`_NNNNN.bin of at most opt.shard_tokens.
class ShardWriter {
 public:
  ShardWriter(const PrepareOptions& opt, std::string split, std::uint64_t vocab)
      : opt_(opt), split_(std::move(split)), vocab_(vocab) {}
  void add(std::uint32_t v) {
    buf_.push_back(v);
    if (buf_.size() >= opt_.shard_tokens) flush();
  }
  void close() {
    if (!buf_.empty() || shard_ == 0) flush();
  }

 private:
  void flush() {
    write_shard((fs::path(opt_.out_dir) / fmt::format("{}_{:05d}.bin", split_, shard_++)).string(), buf_, vocab_);
    buf_.clear();
  }
  const PrepareOptions& opt_;
  std::string split_;
  std::uint64_t vocab_;
  std::vector<std::uint32_t> buf_;
  int shard_ = 0;
};

// The documents of one split into shards. Chat data is aligned to windows of opt.align
// tokens: a document that does not fit in what is left of the window starts the next one
// (the gap filled with end-of-document ids that count nowhere), one longer than a window is
// cut to it; so no conversation is split from its prompt.
void write_split(const PrepareOptions& opt, const Tokenizer& tok, const Documents& d, const std::vector<bool>& is_val,
                 bool val, PrepareReport& rep, std::vector<double>& counts) {
  const std::string split = val ? "val" : "train";
  ShardWriter tokens(opt, split, static_cast<std::uint64_t>(opt.vocab_size)), mask(opt, mask_split(split), 2);
  std::uint64_t& total = val ? rep.val_tokens : rep.train_tokens;
  const auto W = static_cast<std::uint64_t>(opt.align);
  const auto eod = static_cast<std::uint32_t>(tok.end_of_document());
  std::vector<std::uint32_t> ids, m;
  auto put = [&](std::uint32_t id, std::uint32_t counted) {
    tokens.add(id);
    if (d.chat) mask.add(counted), rep.target_tokens += counted && !val;
    if (!val) counts[id] += 1;
    ++total;
  };
  for (std::size_t i = 0; i < d.docs.size(); ++i) {
    if (is_val[i] != val) continue;
    encode(tok, d.docs[i], d.chat, ids, m);
    if (d.chat && W > 0) {
      if (ids.size() > W) ids.resize(W), m.resize(W), ++rep.truncated;
      if (total % W + ids.size() > W)
        while (total % W != 0) put(eod, 0);
    }
    for (std::size_t k = 0; k < ids.size(); ++k) put(ids[k], d.chat ? m[k] : 1);
  }
  if (d.chat && W > 0) {  // the last window filled, and one token more: its last target
    while (total % W != 0) put(eod, 0);
    put(eod, 0);
  }
  tokens.close();
  if (d.chat) mask.close();
}

void write_meta(const PrepareOptions& opt, const PrepareReport& rep, const Tokenizer& tok) {
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
                 {"chat_template", opt.chat.message},
                 {"loss_on", opt.chat.loss_on_all ? "all" : "assistant"},
                 {"target_tokens", rep.target_tokens},
                 {"truncated_documents", rep.truncated}});
  const auto tmp = fs::path(opt.out_dir) / "meta.json.tmp";
  std::ofstream(tmp) << meta.dump(2) << "\n";
  fs::rename(tmp, fs::path(opt.out_dir) / "meta.json");
}

std::string read_file(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in, DataError,
            "{}: {} not found; point it at a prepared directory's tokenizer.model or a model's "
            "tokenizer.json",
            path, what);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The tokenizer in opt.out_dir: trained on the training split only, or reused (fine-tuning
// data must keep the base model's vocabulary): a tokenizer.model, or a Hugging Face
// tokenizer.json with its tokenizer_config.json. The other kind's files, ours from an earlier
// preparation, go.
Tokenizer place_tokenizer(const PrepareOptions& opt, const std::vector<const std::string*>& train_docs) {
  const fs::path out(opt.out_dir);
  const bool hf = !opt.tokenizer.empty() && Tokenizer::is_hf(opt.tokenizer);
  for (const char* name : hf ? std::vector<const char*>{"tokenizer.model"}
                             : std::vector<const char*>{"tokenizer.json", "tokenizer_config.json"})
    fs::remove(out / name);
  if (hf) {
    Tokenizer theirs(opt.tokenizer);  // read and checked where the user put it, then copied as it is
    MOE_CHECK(theirs.size() <= opt.vocab_size, DataError,
              "{}: the tokenizer's ids reach {}, past model.vocab_size = {}; set model.vocab_size to the model's",
              opt.tokenizer, theirs.size() - 1, opt.vocab_size);
    const fs::path config = fs::path(opt.tokenizer).parent_path() / "tokenizer_config.json";
    std::ofstream(out / "tokenizer.json", std::ios::binary) << read_file(opt.tokenizer, "data.tokenizer");
    std::ofstream(out / "tokenizer_config.json") << read_file(config.string(), "data.tokenizer's config");
    return theirs;
  }
  const std::string model =
      opt.tokenizer.empty() ? train_tokenizer(opt, train_docs) : read_file(opt.tokenizer, "data.tokenizer");
  std::ofstream(out / "tokenizer.model", std::ios::binary) << model;
  Tokenizer tok((out / "tokenizer.model").string());
  MOE_CHECK(tok.size() == opt.vocab_size, DataError, "{}: the tokenizer has {} pieces, model.vocab_size = {}",
            opt.tokenizer, tok.size(), opt.vocab_size);
  return tok;
}

}  // namespace

bool its_own_file(const std::string& name) {
  static const std::regex ours(
      R"((meta\.json|tokenizer\.model|tokenizer\.json|tokenizer_config\.json|quality\.bin|(mask_)?(train|val)_\d{5}\.bin)(\.tmp)?|\.moe\.lock)");
  return std::regex_match(name, ours);
}

std::string tokenizer_digest(const std::string& dir) {
  std::ifstream in(Tokenizer::in_dir(dir), std::ios::binary);
  if (!in) return "";
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fmt::format("{:016x}", XXH64(bytes.data(), bytes.size(), 0));
}

PrepareReport prepare(const PrepareOptions& opt) {
  PrepareReport rep;
  const DirLock lock(opt.out_dir, "data.dir");  // one prepare at a time
  std::vector<std::string> others;
  for (const auto& e : fs::directory_iterator(opt.out_dir))
    if (!its_own_file(e.path().filename().string())) others.push_back(e.path().filename().string());
  MOE_CHECK(others.empty() || opt.allow_other_files, DataError,
            "{}: holds {} file(s) moe data prepare did not write (e.g. {}); prepare into an empty directory, or "
            "--force to write beside them (they are left alone)",
            opt.out_dir, others.size(), others.front());
  const Documents d = read_corpus(opt, rep.filters);  // (a previous preparation stays whole if this fails)
  MOE_CHECK(!d.docs.empty(), DataError, "{}: the filters removed every document ({}); relax data.* filter keys",
            opt.corpus, rep.filters.text());
  rep.chat = d.chat;
  rep.documents = static_cast<std::int64_t>(d.docs.size());
  // Held-out documents: a seeded shuffle of document indices, the first val_fraction of it.
  std::vector<std::size_t> order(d.docs.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(opt.seed);
  for (std::size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng() % (i + 1)]);
  rep.val_documents = static_cast<std::int64_t>(std::llround(opt.val_fraction * double(d.docs.size())));
  std::vector<bool> is_val(d.docs.size(), false);
  for (std::int64_t i = 0; i < rep.val_documents; ++i) is_val[order[static_cast<std::size_t>(i)]] = true;
  std::vector<const std::string*> train_docs;
  for (std::size_t i = 0; i < d.docs.size(); ++i)
    if (!is_val[i]) train_docs.push_back(&d.docs[i].text);

  fs::remove(fs::path(opt.out_dir) / "meta.json");  // incomplete until rewritten at the end
  static const std::regex shard(R"((mask_)?(train|val)_\d{5}\.bin(\.tmp)?)");
  for (const auto& e : fs::directory_iterator(opt.out_dir))  // the previous preparation's shards only
    if (std::regex_match(e.path().filename().string(), shard)) fs::remove(e.path());

  const Tokenizer tok = place_tokenizer(opt, train_docs);

  // Shards: documents in corpus order, each followed by end-of-document.
  std::vector<double> counts(static_cast<std::size_t>(opt.vocab_size), 0.0);
  for (const bool val : {false, true}) write_split(opt, tok, d, is_val, val, rep, counts);
  for (double c : counts)
    if (c > 0) rep.unigram_entropy -= c / double(rep.train_tokens) * std::log(c / double(rep.train_tokens));

  // (before meta.json: without it the directory reads as unprepared)
  MOE_CHECK(rep.val_tokens >= opt.min_val_tokens, DataError,
            "{}: data.val_fraction = {} held out {} documents, {} tokens: fewer than one sequence of {}; raise "
            "data.val_fraction or give a larger corpus",
            opt.corpus, opt.val_fraction, rep.val_documents, rep.val_tokens, opt.min_val_tokens);
  write_meta(opt, rep, tok);
  return rep;
}

}  // namespace moe::data
