// Training sequences drawn from several prepared directories in given proportions
// (data.sources; one source is the plain case, the same batches as a lone Loader).
//
// Every step's global batch of B sequences is apportioned among the sources by Webster's
// (Sainte-Laguë) divisor method applied to the whole run so far: the sequences source i has
// given before step s are K_i(s B), the Webster apportionment of s B seats to the weights.
// Divisor methods are house-monotone (K_i(n + 1) >= K_i(n)), so a step's share, K_i((s+1)B) -
// K_i(sB), is never negative, and the cumulative shares stay within about one sequence of
// s B w_i / sum(w) at every step: exact proportions over any window of steps, up to one
// sequence per source at its ends. K depends on (weights, n) alone: a restart at step k, and
// any number of data-parallel ranks (each filling its own rows), see the same batches. Source
// i's n-th sequence is its own Loader's global sample n (its own permutation, seeded by the
// run's seed and i), so each source goes through its windows epoch by epoch at its own rate.
// Within a step the sources' sequences come in source order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/loader.h"

namespace moe::data {

struct Source {
  const TokenStream* stream;
  Masking masking;
  double weight = 1;
  std::string name;  // for logs and errors (its directory)
};

class Mixture {
 public:
  Mixture(const std::vector<Source>& sources, std::int64_t seq_len, std::uint64_t seed, std::int64_t global_batch);
  // Sequences [first, first+count) of the global batch of `step`.
  void fill(std::int64_t step, std::int64_t first, std::int64_t count, Batch& batch);
  // The targets the loss counts in the global batch of `step`.
  std::int64_t targets(std::int64_t step);
  // Whether batches carry document positions (any source masks documents).
  bool documents() const { return documents_; }
  std::size_t size() const { return loaders_.size(); }
  const Source& source(std::size_t i) const { return sources_[i]; }
  std::int64_t windows(std::size_t i) const { return loaders_[i]->windows(); }
  // Sequences source i has given in the steps before `step`.
  std::int64_t drawn(std::size_t i, std::int64_t step) const { return apportion(step * global_batch_)[i]; }

 private:
  std::vector<std::int64_t> apportion(std::int64_t seats) const;
  // The source of sequence j of `step` and its index among that source's sequences.
  std::pair<std::size_t, std::int64_t> locate(std::int64_t step, std::int64_t j);
  std::vector<Source> sources_;
  std::vector<std::unique_ptr<Loader>> loaders_;
  std::vector<std::int64_t> weights_;  // integer weights (parts per 2^20 of the largest), exact comparisons
  std::int64_t global_batch_;
  bool documents_ = false;
  std::int64_t step_ = -1;                      // the step whose apportionment is cached
  std::vector<std::int64_t> before_, in_step_;  // its K_i(s B) and its shares
};

}  // namespace moe::data
