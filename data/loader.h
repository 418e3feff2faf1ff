// Deterministic, resumable batches of packed sequences (docs/DATA.md).
// The token stream (documents, each followed by end-of-document) is cut into windows of T+1
// tokens at stride T: window w holds inputs [wT, wT+T) and targets [wT+1, wT+T+1), so
// sequences run across document boundaries. Global sample g = step * global_batch + j goes
// to epoch g / W, which visits the W windows in a permutation seeded by (seed, epoch). The
// order is a function of (seed, step) alone: a restart at step k continues exactly, and any
// number of data-parallel ranks sees the same global batch, each rank reading only its rows.
#pragma once
#include <cstdint>
#include <vector>

#include "data/shard.h"
#include "kernels/tensor.h"

namespace moe::data {

class Loader {
 public:
  Loader(const TokenStream& stream, std::int64_t seq_len, std::uint64_t seed, std::int64_t global_batch);
  std::int64_t windows() const { return W_; }
  // Sequences [first, first+count) of the global batch of `step` into tokens and targets
  // (count*T, i32).
  void fill(std::int64_t step, std::int64_t first, std::int64_t count, Tensor& tokens, Tensor& targets);
  // Windows in stream order (evaluation): sequence s of the evaluation set is window s mod W.
  void fill_in_order(std::int64_t first, std::int64_t count, Tensor& tokens, Tensor& targets) const;

 private:
  void window(std::int64_t w, std::int32_t* tokens, std::int32_t* targets) const;
  const TokenStream& stream_;
  std::int64_t T_, W_, global_batch_;
  std::uint64_t seed_;
  std::int64_t epoch_ = -1;  // epoch whose permutation is cached
  std::vector<std::int64_t> order_;
  mutable std::vector<std::int32_t> buf_;  // one window, reused
};

}  // namespace moe::data
