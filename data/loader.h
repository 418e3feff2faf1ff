// Deterministic, resumable batches of packed sequences (docs/DATA.md).
// The token stream (documents, each followed by end-of-document) is cut into windows of T+1
// tokens at stride T: window w holds inputs [wT, wT+T) and targets [wT+1, wT+T+1), so
// sequences run across document boundaries. Global sample g = step * global_batch + j goes
// to epoch g / W, which visits the W windows in a permutation seeded by (seed, epoch). The
// order is a function of (seed, step) alone: a restart at step k continues exactly, and any
// number of data-parallel ranks sees the same global batch, each rank reading only its rows.
//
// Masking (Masking): a loss-mask stream beside the tokens (chat data: only the assistant's
// tokens are targets) turns the other targets into -1, which the loss skips; document masking
// gives each input its place in its document (positions, restarting after every
// end-of-document), so that attention sees no earlier document, and skips the target of the
// end-of-document input itself (the next document's first token, which nothing in the
// document predicts).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/chat_template.h"
#include "data/shard.h"
#include "kernels/tensor.h"

namespace moe::data {

struct Masking {
  const TokenStream* loss_mask = nullptr;  // as long as the tokens; 1 = the token is a target (null: all are)
  bool documents = false;                  // document masking: positions, and no target after end-of-document
  std::int32_t end_of_document = 1;
  bool any() const { return loss_mask || documents; }
};

// A micro-batch's rows as the model takes them: count*T i32 each; positions are left
// undefined without document masking.
struct Batch {
  Tensor tokens, targets, positions;
  Batch() = default;
  Batch(std::int64_t count, std::int64_t T, bool documents);
};

// One split of a prepared directory as training and evaluation read it: its tokens and, for
// chat data (meta.json's loss_mask), its loss mask, which refuses a seq_len other than the one
// the data was aligned to (DataError naming meta.json). masking(): with document masking or not.
class PreparedSplit {
 public:
  PreparedSplit(const std::string& dir, const std::string& split, std::uint64_t vocab, std::int64_t seq_len);
  const TokenStream& tokens() const { return tokens_; }
  bool chat() const { return mask_ != nullptr; }
  Masking masking(DocumentMask documents) const {
    return {mask_.get(), document_masking(documents, chat()), end_of_document_};
  }

 private:
  TokenStream tokens_;
  std::unique_ptr<TokenStream> mask_;
  std::int32_t end_of_document_ = 1;
};

class Loader {
 public:
  Loader(const TokenStream& stream, std::int64_t seq_len, std::uint64_t seed, std::int64_t global_batch,
         Masking masking = {});
  std::int64_t windows() const { return W_; }
  const Masking& masking() const { return masking_; }
  // Sequences [first, first+count) of the global batch of `step`.
  void fill(std::int64_t step, std::int64_t first, std::int64_t count, Batch& batch);
  // Global sample g (of this stream alone: step * global_batch + j) into row `row`; and the
  // targets it counts. A batch with positions gets them without document masking too (one
  // document: 0, 1, ...), so a mixture's sources may differ (data/mixture.h).
  void fill_sample(std::int64_t g, std::int64_t row, Batch& batch);
  std::int64_t sample_targets(std::int64_t g);
  // Windows in stream order (evaluation): sequence s of the evaluation set is window s mod W.
  void fill_in_order(std::int64_t first, std::int64_t count, Batch& batch) const;
  // The targets the loss counts in the global batch of `step` (the loss's denominator): every
  // token without masking, else those fill leaves >= 0 (each window read once more).
  std::int64_t targets(std::int64_t step);
  // The same over `batches` global batches of windows in stream order (evaluation).
  std::int64_t targets_in_order(std::int64_t batches) const;

 private:
  void permute(std::int64_t epoch);  // order_ := epoch's permutation of the windows
  std::int64_t window_at(std::int64_t g);
  void window(std::int64_t w, std::int64_t row, Batch& batch) const;
  void expect_batch(const char* op, const Batch& batch, std::int64_t count) const;  // shapes, positions where needed
  std::int64_t window_targets(std::int64_t w) const;
  const TokenStream& stream_;
  std::int64_t T_, W_, global_batch_;
  std::uint64_t seed_;
  Masking masking_;
  std::int64_t epoch_ = -1;  // epoch whose permutation is cached
  std::vector<std::int64_t> order_;
  mutable std::vector<std::int32_t> buf_, mask_;  // one window, reused
  mutable Batch one_;                             // one row, where targets() counts a window's (masking)
};

}  // namespace moe::data
