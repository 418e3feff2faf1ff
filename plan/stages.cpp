#include "plan/stages.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/error.h"
#include "plan/counts.h"

namespace moe {

double block_cost(const ModelConfig& m, std::int64_t layer) {
  const double ffn =
      is_moe_layer(m, layer)
          ? double(router_parameters(m) + shared_expert_parameters(m) + m.top_k * routed_expert_parameters(m))
          : double(dense_ffn_parameters(m));
  return 6 * (double(attention_matrix_parameters(m)) + ffn) + attention_core_flops_per_token(m);
}

// The LM head, and each MTP depth after it (its block, eh_proj and the head again).
double head_cost(const ModelConfig& m) {
  double cost = 6.0 * double(m.vocab_size * m.d_model);
  for (std::int64_t k = 0; k < m.mtp_depth; ++k)
    cost += block_cost(m, m.n_layers + k) + 6.0 * double(m.vocab_size * m.d_model + mtp_projection_parameters(m));
  return cost;
}

namespace {
// DualPipeV: stage s holds chunks s and 2p-1-s, so stage 0 holds the embedding's and the
// head's, and what must balance is each stage's sum, not each chunk. Stages fill from both
// ends of the blocks left, each leaving a block for every chunk after it; the least largest
// sum M that allows is found by bisection, each stage taking the most it can. Then each stage
// in turn takes the sum nearest the mean of what is left, within M (the largest is then M and
// the others even, which the most-it-can fill does not give: its last stages end light).
std::vector<std::int64_t> v_bounds(const std::vector<double>& prefix, std::int64_t L, int p) {
  const auto cost = [&](std::int64_t a, std::int64_t b) { return prefix[std::size_t(b)] - prefix[std::size_t(a)]; };
  std::vector<std::int64_t> bounds(std::size_t(2 * p + 1));
  // Stages fill to at most M, each nearest `even ? the mean of what is left : M`.
  const auto fill = [&](double M, bool even) {
    std::int64_t lo = 0, hi = L;
    for (int s = 0; s < p - 1; ++s) {
      const std::int64_t after = 2 * std::int64_t(p - 1 - s);  // chunks still to place
      const double want = even ? cost(lo, hi) / (p - s) : M;
      double best = std::numeric_limits<double>::infinity();
      for (std::int64_t a = lo + 1; a < hi; ++a)
        for (std::int64_t b = hi - 1; b >= a + after; --b) {
          const double sum = cost(lo, a) + cost(b, hi);
          if (sum <= M && std::abs(sum - want) < best)
            best = std::abs(sum - want), bounds[std::size_t(s + 1)] = a, bounds[std::size_t(2 * p - 1 - s)] = b;
        }
      if (best == std::numeric_limits<double>::infinity()) return false;
      lo = bounds[std::size_t(s + 1)], hi = bounds[std::size_t(2 * p - 1 - s)];
    }
    if (hi - lo < 2 || cost(lo, hi) > M) return false;
    std::int64_t mid = lo + 1;  // the last stage's two chunks are adjacent: split the middle evenly
    for (std::int64_t k = lo + 1; k < hi; ++k)
      if (std::max(cost(lo, k), cost(k, hi)) < std::max(cost(lo, mid), cost(mid, hi))) mid = k;
    bounds[std::size_t(p)] = mid;
    return true;
  };
  double low = cost(0, L) / p, high = cost(0, L);
  for (int k = 0; k < 60 && high - low > 1e-9 * high; ++k)
    (fill((low + high) / 2, false) ? high : low) = (low + high) / 2;
  if (!fill(high, true)) fill(high, false);
  bounds.front() = 0, bounds.back() = L;
  return bounds;
}
}  // namespace

std::vector<std::int64_t> stage_bounds(const Config& cfg, int pp) {
  const ModelConfig& m = cfg.model;
  const std::int64_t L = m.n_layers;
  std::vector<std::int64_t> bounds(1, 0);
  if (!cfg.parallel.pp_layers.empty() && std::int64_t(cfg.parallel.pp_layers.size()) == pp) {
    for (auto n : cfg.parallel.pp_layers) bounds.push_back(bounds.back() + n);
    return bounds;
  }
  MOE_CHECK(pp >= 1 && pp <= L, ConfigError, "{}: {} pipeline stages for {} blocks: each stage needs a block",
            cfg.source, pp, L);
  // prefix[i]: cost of blocks [0, i); the head joins the last block.
  std::vector<double> prefix(static_cast<std::size_t>(L + 1), 0);
  for (std::int64_t i = 0; i < L; ++i)
    prefix[std::size_t(i + 1)] = prefix[std::size_t(i)] + block_cost(m, i) + (i == L - 1 ? head_cost(m) : 0);
  if (cfg.parallel.schedule == PipeSchedule::dualpipev && pp % 2 == 0 && pp >= 4) return v_bounds(prefix, L, pp / 2);
  // best[s][i]: the least possible largest stage when s stages hold blocks [0, i).
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<std::vector<double>> best(static_cast<std::size_t>(pp + 1), std::vector<double>(std::size_t(L + 1), inf));
  std::vector<std::vector<std::int64_t>> cut(best.size(), std::vector<std::int64_t>(std::size_t(L + 1), 0));
  best[0][0] = 0;
  for (int s = 1; s <= pp; ++s)
    for (std::int64_t i = s; i <= L; ++i)
      for (std::int64_t j = s - 1; j < i; ++j) {
        const double v =
            std::max(best[std::size_t(s - 1)][std::size_t(j)], prefix[std::size_t(i)] - prefix[std::size_t(j)]);
        if (v < best[std::size_t(s)][std::size_t(i)])
          best[std::size_t(s)][std::size_t(i)] = v, cut[std::size_t(s)][std::size_t(i)] = j;
      }
  bounds.assign(std::size_t(pp + 1), L);
  for (int s = pp; s > 0; --s) bounds[std::size_t(s - 1)] = cut[std::size_t(s)][std::size_t(bounds[std::size_t(s)])];
  return bounds;
}

}  // namespace moe
