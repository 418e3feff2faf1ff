// What the two paths of `moe data prepare` share: text corpora stream through the parallel
// pipeline of prepare_text.cpp, chat data is read whole (prepare.cpp). Internal to data/.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "data/prepare.h"
#include "data/tokenizer.h"

namespace moe::data::detail {

// The lines a tokenizer trains on, asked for only when one is trained.
using TrainingLines = std::function<std::vector<std::string>()>;
// A document's non-empty lines appended to `lines` (SentencePiece trains on sentences).
void append_lines(const std::string& doc, std::vector<std::string>& lines);

// The tokenizer in opt.out_dir: trained on `lines`, or reused (data.tokenizer).
Tokenizer place_tokenizer(const PrepareOptions& opt, const TrainingLines& lines);

// DataError when out_dir holds files prepare did not write (its_own_file), unless
// opt.allow_other_files.
void check_out_dir(const PrepareOptions& opt);
// The previous preparation's meta.json, then its shards: the directory reads as unprepared
// from the first removal on.
void remove_previous_output(const std::string& out_dir);

// One split's token (and mask) shards: `split`_NNNNN.bin of at most opt.shard_tokens.
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
  void flush();
  const PrepareOptions& opt_;
  std::string split_;
  std::uint64_t vocab_;
  std::vector<std::uint32_t> buf_;
  int shard_ = 0;
};

// The unigram entropy (nats per token) of a split's token counts.
double unigram_entropy(const std::vector<double>& counts, std::uint64_t tokens);
// meta.json, written last through a temporary name.
void write_meta(const PrepareOptions& opt, const PrepareReport& rep, const Tokenizer& tok);
// The validation split's minimum (opt.min_val_tokens), checked before meta.json is written.
void check_val_tokens(const PrepareOptions& opt, const PrepareReport& rep);

// Text corpora: read, filtered, deduplicated and encoded by the ranks of `comm` together.
PrepareReport prepare_text(const PrepareOptions& opt, Communicator& comm);

}  // namespace moe::data::detail
