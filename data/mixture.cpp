#include "data/mixture.h"

#include <algorithm>
#include <cmath>

#include "kernels/error.h"

namespace moe::data {
namespace {
__extension__ using i128 = __int128;  // weight x seat products, exact

// Seat k of source j (its (k+1)-th sequence) ranks by w_j / (2k + 1), higher first, then by
// lower j: a strict total order, so "the n best seats" is one set for every n.
bool better(std::int64_t wa, std::int64_t ka, std::size_t ja, std::int64_t wb, std::int64_t kb, std::size_t jb) {
  const i128 a = static_cast<i128>(wa) * (2 * kb + 1), b = static_cast<i128>(wb) * (2 * ka + 1);
  return a != b ? a > b : ja < jb;
}
}  // namespace

Mixture::Mixture(const std::vector<Source>& sources, std::int64_t seq_len, std::uint64_t seed,
                 std::int64_t global_batch)
    : sources_(sources), global_batch_(global_batch) {
  MOE_CHECK(!sources.empty(), DataError, "a mixture of no sources");
  double top = 0;
  for (const Source& s : sources) top = std::max(top, s.weight);
  for (std::size_t i = 0; i < sources.size(); ++i) {
    const Source& s = sources[i];
    MOE_CHECK(std::isfinite(s.weight) && s.weight > 0, DataError, "{}: weight {} must be finite and > 0", s.name,
              s.weight);
    weights_.push_back(std::max<std::int64_t>(1, std::llround(s.weight / top * double(1 << 20))));
    // Source 0 draws as a lone Loader of the run's seed would; the others from seeds of their own.
    const std::uint64_t own = seed + 0x632BE59BD9B4E019ull * i;
    loaders_.push_back(std::make_unique<Loader>(*s.stream, seq_len, own, 1, s.masking));
    documents_ = documents_ || s.masking.documents;
  }
}

// Webster's apportionment of `seats`: the `seats` best seats in the order of better(). Start
// below it (each source's quota less the number of sources: a divisor method strays from the
// quota by less than that), then add the best seats not held until all are placed; each
// addition is the next seat of the set, so the result is the set itself.
std::vector<std::int64_t> Mixture::apportion(std::int64_t seats) const {
  const std::size_t n = weights_.size();
  i128 total = 0;
  for (std::int64_t w : weights_) total += w;
  std::vector<std::int64_t> k(n);
  std::int64_t held = 0;
  for (std::size_t j = 0; j < n; ++j) {
    const auto quota = static_cast<std::int64_t>(static_cast<i128>(seats) * weights_[j] / total);
    k[j] = std::max<std::int64_t>(0, quota - static_cast<std::int64_t>(n) - 1);
    held += k[j];
  }
  for (; held < seats; ++held) {
    std::size_t best = 0;
    for (std::size_t j = 1; j < n; ++j)
      if (better(weights_[j], k[j], j, weights_[best], k[best], best)) best = j;
    ++k[best];
  }
  return k;
}

std::pair<std::size_t, std::int64_t> Mixture::locate(std::int64_t step, std::int64_t j) {
  if (step != step_) {
    before_ = apportion(step * global_batch_);
    const auto after = apportion((step + 1) * global_batch_);
    in_step_.resize(after.size());
    for (std::size_t i = 0; i < after.size(); ++i) in_step_[i] = after[i] - before_[i];
    step_ = step;
  }
  std::size_t i = 0;
  while (j >= in_step_[i]) j -= in_step_[i++];
  return {i, before_[i] + j};
}

void Mixture::fill(std::int64_t step, std::int64_t first, std::int64_t count, Batch& batch) {
  for (std::int64_t j = 0; j < count; ++j) {
    const auto [i, n] = locate(step, first + j);
    loaders_[i]->fill_sample(n, j, batch);
  }
}

std::int64_t Mixture::targets(std::int64_t step) {
  std::int64_t total = 0;
  for (std::int64_t j = 0; j < global_batch_; ++j) {
    const auto [i, n] = locate(step, j);
    total += loaders_[i]->sample_targets(n);
  }
  return total;
}

}  // namespace moe::data
