// The MoE router (../shared/DESIGN.md): scores and a biased, group-limited top-k choice with
// gates (ops::router_forward), capacity in token order (ops::route_capacity), the
// sequence-wise balance loss (ops::balance_loss_*) and the z-loss on its logits
// (ops::router_z_loss_*), both into the balance-loss total, and the balancing bias's update. Every
// decision is made on the device of the router's input; only the per-expert counts are read
// back, by the dispatch plan (model/dispatch.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "config/model_config.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

// One micro-batch's routing, on the device. What the dispatch plan and the backward read.
struct Routing {
  Tensor scores;         // (N,E) f32
  Tensor index;          // (N,K) i32: the chosen experts
  Tensor gates;          // (N,K) f32
  Tensor kept;           // (N,K) i32: the expert of each kept assignment of this tp rank's tokens, else -1
  Tensor f;              // (B,E) f64: selection fractions for the balance loss's backward (undefined without it)
  Tensor logits, z_lse;  // (N,E), (N) f32: the z-loss's inputs to its backward (undefined without it)
  std::int64_t T = 0;
};

class Router {
 public:
  // prefix "model.layers.{i}.mlp.": the weight is "{prefix}gate.weight" (E,C).
  Router(const ModelConfig& c, const std::string& prefix, const TensorParallel& tp);
  // x (N,C) -> the choices of tokens [n0, n1) under capacity. counts (2,E) i32 on x's device
  // (a view, written through): the load and the kept assignments per expert (ops::route_capacity). aux_total (1) f64 +=
  // the balance loss summed over the micro-batch's sequences of T tokens (when it is on and
  // this tp rank counts it: tp ranks share the routing).
  Routing forward(const Tensor& x, std::int64_t T, std::int64_t n0, std::int64_t n1, Tensor counts, Tensor& aux_total);
  // dx += the input gradient through the gates dgates (N,K) and the balance loss (times
  // aux_scale); the weight's gradient accumulates.
  void backward(Tensor& dx, const Tensor& dgates, const Tensor& x, const Routing& r, double aux_scale);
  // b_e += rate * sign(mean(load) - load_e), with the load summed over the global batch.
  void update_bias(const std::vector<double>& global_load, double rate);

  Param& weight() { return weight_; }
  // e_score_correction_bias (E, all experts): steers selection, not trained by gradients.
  Tensor& bias() { return bias_; }
  const std::string& bias_name() const { return bias_name_; }
  std::int64_t experts() const { return E_; }
  std::int64_t top_k() const { return K_; }
  // Assignments an expert keeps of N tokens: ceil(factor * N * K / E); -1 without a limit.
  std::int64_t capacity(std::int64_t N) const;

 private:
  bool counts_balance_loss() const { return aux_coef_ != 0 && tp_rank_ == 0; }
  bool counts_z_loss() const { return z_coef_ != 0 && tp_rank_ == 0; }

  std::int64_t E_, K_;  // routed experts, experts per token (top_k)
  ops::RouterSpec spec_;
  double capacity_factor_, aux_coef_, z_coef_;
  int tp_rank_;
  Param weight_;
  std::string bias_name_;
  Tensor bias_;
};

}  // namespace moe
