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

#include "data/corpus.h"
#include "data/dir_lock.h"
#include "data/shard.h"
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

}  // namespace

// Over 60 lines, and left so: the data-at-scale issue replaces this in-memory, one-process
// pass with streaming readers and stages (docs/ARCHITECTURE.md, "Next").
bool its_own_file(const std::string& name) {
  static const std::regex ours(R"((meta\.json|tokenizer\.model|(train|val)_\d{5}\.bin)(\.tmp)?|\.moe\.lock)");
  return std::regex_match(name, ours);
}

std::string tokenizer_digest(const std::string& dir) {
  std::ifstream in(fs::path(dir) / "tokenizer.model", std::ios::binary);
  if (!in) return "";
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return fmt::format("{:016x}", XXH64(bytes.data(), bytes.size(), 0));
}

PrepareReport prepare(const PrepareOptions& opt) {
  PrepareReport rep;
  const auto docs = [&] {
    auto all = read_documents(opt.corpus);
    const auto keep = filter_documents(all, opt.filters, rep.filters);
    std::vector<std::string> kept;
    kept.reserve(keep.size());
    for (std::size_t i : keep) kept.push_back(std::move(all[i]));
    return kept;
  }();
  MOE_CHECK(!docs.empty(), DataError, "{}: the filters removed every document ({}); relax data.* filter keys",
            opt.corpus, rep.filters.text());
  rep.documents = static_cast<std::int64_t>(docs.size());
  // Held-out documents: a seeded shuffle of document indices, the first val_fraction of it.
  std::vector<std::size_t> order(docs.size());
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(opt.seed);
  for (std::size_t i = order.size() - 1; i > 0; --i) std::swap(order[i], order[rng() % (i + 1)]);
  rep.val_documents = static_cast<std::int64_t>(std::llround(opt.val_fraction * double(docs.size())));
  std::vector<bool> is_val(docs.size(), false);
  for (std::int64_t i = 0; i < rep.val_documents; ++i) is_val[order[static_cast<std::size_t>(i)]] = true;
  std::vector<const std::string*> train_docs;
  for (std::size_t d = 0; d < docs.size(); ++d)
    if (!is_val[d]) train_docs.push_back(&docs[d]);

  const DirLock lock(opt.out_dir, "data.dir");  // one prepare at a time
  std::vector<std::string> others;
  for (const auto& e : fs::directory_iterator(opt.out_dir))
    if (!its_own_file(e.path().filename().string())) others.push_back(e.path().filename().string());
  MOE_CHECK(others.empty() || opt.allow_other_files, DataError,
            "{}: holds {} file(s) moe data prepare did not write (e.g. {}); prepare into an empty directory, or "
            "--force to write beside them (they are left alone)",
            opt.out_dir, others.size(), others.front());
  fs::remove(fs::path(opt.out_dir) / "meta.json");           // incomplete until rewritten at the end
  for (const auto& e : fs::directory_iterator(opt.out_dir))  // the previous preparation's shards only
    if (its_own_file(e.path().filename().string()) && e.path().extension() == ".bin") fs::remove(e.path());

  // Tokenizer: trained on the training split only, or reused (fine-tuning data must keep
  // the base model's vocabulary).
  std::string model;
  if (opt.tokenizer.empty()) {
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
  } else {
    std::ifstream in(opt.tokenizer, std::ios::binary);
    MOE_CHECK(in, DataError, "{}: data.tokenizer not found; point it at a prepared directory's tokenizer.model",
              opt.tokenizer);
    model.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  sentencepiece::SentencePieceProcessor sp;
  check(sp.LoadFromSerializedProto(model),
        fmt::format("{}: loading the tokenizer", opt.tokenizer.empty() ? opt.out_dir : opt.tokenizer));
  MOE_CHECK(sp.GetPieceSize() == opt.vocab_size, DataError, "{}: the tokenizer has {} pieces, model.vocab_size = {}",
            opt.tokenizer, sp.GetPieceSize(), opt.vocab_size);
  std::ofstream(fs::path(opt.out_dir) / "tokenizer.model", std::ios::binary) << model;

  // Shards: documents in corpus order, each followed by end-of-document.
  std::vector<double> counts(static_cast<std::size_t>(opt.vocab_size), 0.0);
  for (const std::string split : {"train", "val"}) {
    std::vector<std::uint32_t> buf;
    int shard = 0;
    std::uint64_t& total = split == "train" ? rep.train_tokens : rep.val_tokens;
    auto flush = [&] {
      write_shard((fs::path(opt.out_dir) / fmt::format("{}_{:05d}.bin", split, shard++)).string(), buf,
                  static_cast<std::uint64_t>(opt.vocab_size));
      buf.clear();
    };
    for (std::size_t d = 0; d < docs.size(); ++d) {
      if (is_val[d] != (split == "val")) continue;
      std::vector<int> ids;
      check(sp.Encode(docs[d], &ids), "encoding");
      ids.push_back(kEndOfDocument);
      for (int id : ids) {
        buf.push_back(static_cast<std::uint32_t>(id));
        if (split == "train") counts[static_cast<std::size_t>(id)] += 1;
      }
      total += ids.size();
      if (buf.size() >= opt.shard_tokens) flush();
    }
    if (!buf.empty() || shard == 0) flush();
  }
  for (double c : counts)
    if (c > 0) rep.unigram_entropy -= c / double(rep.train_tokens) * std::log(c / double(rep.train_tokens));

  // (before meta.json: without it the directory reads as unprepared)
  MOE_CHECK(rep.val_tokens >= opt.min_val_tokens, DataError,
            "{}: data.val_fraction = {} held out {} documents, {} tokens: fewer than one sequence of {}; raise "
            "data.val_fraction or give a larger corpus",
            opt.corpus, opt.val_fraction, rep.val_documents, rep.val_tokens, opt.min_val_tokens);
  const nlohmann::json meta = {{"format", "moe-shards"},
                               {"version", kShardVersion},
                               {"corpus", opt.corpus},
                               {"vocab_size", opt.vocab_size},
                               {"end_of_document_id", kEndOfDocument},
                               {"tokenizer", "tokenizer.model"},
                               {"tokenizer_xxh64", tokenizer_digest(opt.out_dir)},
                               {"documents", rep.documents},
                               {"val_documents", rep.val_documents},
                               {"train_tokens", rep.train_tokens},
                               {"val_tokens", rep.val_tokens},
                               {"unigram_entropy_nats", rep.unigram_entropy},
                               {"seed", opt.seed},
                               {"filters", rep.filters.json()}};
  const auto tmp = fs::path(opt.out_dir) / "meta.json.tmp";
  std::ofstream(tmp) << meta.dump(2) << "\n";
  fs::rename(tmp, fs::path(opt.out_dir) / "meta.json");
  return rep;
}

}  // namespace moe::data
