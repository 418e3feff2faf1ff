// The MoE router's decisions as pure functions of the routing choices (host copies): which
// assignments an expert keeps under a capacity factor, and the sequence-wise balance loss
// with its gradient on the scores (../shared/DESIGN.md). MoE (model/moe.h) calls them; the
// scores, choices and gates themselves come from ops::router_forward on the device.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/tensor.h"

namespace moe::routing {

// Capacity: an expert keeps its first `cap` assignments in token order, cap =
// ceil(factor * N * K / E) (factor 0: no limit). pos[a]: assignment a's place among its
// expert's kept ones, -1 if dropped. load and dropped count the tokens [n0, n1) alone (this
// tensor-parallel rank's share), load before the drops.
struct Kept {
  std::vector<std::int64_t> pos;   // (N*K)
  std::vector<std::int64_t> load;  // (E)
  std::int64_t dropped = 0;
};
Kept apply_capacity(const std::int32_t* index, std::int64_t N, std::int64_t K, std::int64_t E, double factor,
                    std::int64_t n0, std::int64_t n1);

// Per sequence of T tokens: f_e = E/(K T) * #tokens choosing e, P_e = mean_t of the scores
// normalised over all experts; loss = coef * sum_e f_e P_e, summed over the B sequences.
// scores (B*T, E) f32 on the host; f (B, E) is written for the backward.
double balance_loss(std::vector<double>& f, const Tensor& scores, const std::int32_t* index, std::int64_t B,
                    std::int64_t T, std::int64_t K, double coef);
// dloss/dscores (B*T, E) f32 on the host, times scale: coef * f_e / T per token through
// s' = s / sum(s).
Tensor balance_loss_grad(const std::vector<double>& f, const Tensor& scores, std::int64_t T, double coef, double scale);

}  // namespace moe::routing
