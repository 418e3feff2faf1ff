#include "plan/stages.h"

#include <algorithm>
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
