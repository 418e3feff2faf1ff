// Mixture-of-Experts FFN: shared experts (always on) + routed experts chosen per token.
//   out = shared(x) + sum_i gate_i * expert_{idx_i}(x)
// Router and balancing follow ../shared/DESIGN.md: selection by score + bias, gates from the
// scores, bias nudged toward balance after each step; optional sequence-wise balance loss
// and capacity factor (assignments past an expert's capacity are dropped, in token order).
#pragma once
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/ffn.h"
#include "model/param.h"

namespace moe {

class MoE {
 public:
  MoE(const ModelConfig& c, const std::string& prefix);  // prefix "model.layers.{i}.mlp."
  // out (B*T,C) from x (B*T,C). Returns the balance loss of this micro-batch summed over its
  // sequences (aux_loss_coef * sum_i f_i P_i per sequence; 0 when the coefficient is 0).
  double forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T);
  // dx (assign); aux_scale multiplies the balance-loss sum returned by forward.
  void backward(Tensor& dx, const Tensor& dout, const Tensor& x, double aux_scale);
  ParamList params();

  // e_score_correction_bias (E): steers selection, not trained by gradients.
  Tensor& bias() { return bias_; }
  const std::string& bias_name() const { return bias_name_; }
  // Tokens routed to each expert by the last forward (before capacity drops), and drops.
  const std::vector<std::int64_t>& load() const { return load_; }
  std::int64_t dropped() const { return dropped_; }
  // b_e += rate * sign(mean(load) - load_e), with the load summed over the global batch.
  void update_bias(const std::vector<double>& global_load, double rate);

  std::int64_t experts() const { return E_; }

 private:
  std::int64_t C_, E_, K_, H_, T_ = 0;
  ops::RouterSpec spec_;
  double capacity_factor_, aux_coef_;
  Param router_;
  std::string bias_name_;
  Tensor bias_;
  Param gate_, up_, down_;         // routed experts: (E,H,C), (E,H,C), (E,C,H)
  std::unique_ptr<SwiGLU> shared_;  // null without shared experts
  // Saved by forward.
  Tensor scores, index, gates, xp, gp, upp, hp, yp;
  std::vector<std::int64_t> pos_;      // (N*K) row of assignment (n,i) in the permuted buffers, -1 if dropped
  std::vector<std::int64_t> offsets_;  // (E+1) rows of each expert in the permuted buffers
  std::vector<std::int64_t> load_;
  std::vector<double> f_;              // (B,E) selection fractions for the balance loss
  std::int64_t dropped_ = 0;
};

}  // namespace moe
