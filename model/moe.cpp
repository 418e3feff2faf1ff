#include "model/moe.h"

#include <algorithm>
#include <cmath>

namespace moe {

MoE::MoE(const ModelConfig& c, const std::string& p)
    : C_(c.d_model), E_(c.routed_experts), K_(c.top_k), H_(c.expert_hidden),
      spec_{.kind = c.router == RouterType::sigmoid ? ops::RouterKind::sigmoid : ops::RouterKind::softmax,
            .top_k = static_cast<int>(c.top_k), .n_groups = static_cast<int>(c.n_groups),
            .topk_groups = static_cast<int>(c.topk_groups), .normalize = c.router_normalize,
            .scaling = c.routed_scaling_factor},
      capacity_factor_(c.capacity_factor), aux_coef_(c.aux_loss_coef),
      router_(p + "gate.weight", {E_, C_}), bias_name_(p + "gate.e_score_correction_bias"),
      bias_(Tensor::zeros({E_}, DType::f32)),
      // One 3-D tensor per projection; expert j's slice is HF's mlp.experts.{j}.*_proj.weight.
      gate_(p + "experts.gate_proj.weight", {E_, H_, C_}), up_(p + "experts.up_proj.weight", {E_, H_, C_}),
      down_(p + "experts.down_proj.weight", {E_, C_, H_}), load_(static_cast<std::size_t>(E_)) {
  if (c.shared_experts > 0) shared_ = std::make_unique<SwiGLU>(C_, c.shared_experts * H_, p + "shared_experts.");
}

ParamList MoE::params() {
  ParamList ps = {&router_, &gate_, &up_, &down_};
  if (shared_)
    for (Param* q : shared_->params()) ps.push_back(q);
  return ps;
}

double MoE::forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T) {
  const std::int64_t N = x.size(0);
  T_ = T;
  // Route: logits (N,E) -> scores, index (N,K), gates (N,K).
  Tensor logits = Tensor::empty({N, E_}, DType::f32);
  ops::matmul_forward(logits, x, router_.w);
  scores = Tensor::empty({N, E_}, DType::f32);
  index = Tensor::empty({N, K_}, DType::i32);
  gates = Tensor::empty({N, K_}, DType::f32);
  ops::router_forward(scores, index, gates, logits, bias_, spec_);
  const std::int32_t* idx = index.data<std::int32_t>();

  // Capacity and permutation: assignment (n,i) goes to row pos_[n*K+i] of its expert's block;
  // within an expert, rows keep token order.
  std::fill(load_.begin(), load_.end(), 0);
  for (std::int64_t a = 0; a < N * K_; ++a) ++load_[static_cast<std::size_t>(idx[a])];
  const std::int64_t cap = capacity_factor_ > 0
                               ? static_cast<std::int64_t>(std::ceil(capacity_factor_ * double(N * K_) / double(E_)))
                               : N * K_;
  std::vector<std::int64_t> kept(static_cast<std::size_t>(E_), 0);
  pos_.assign(static_cast<std::size_t>(N * K_), -1);
  for (std::int64_t a = 0; a < N * K_; ++a) {
    auto& k = kept[static_cast<std::size_t>(idx[a])];
    if (k < cap) pos_[static_cast<std::size_t>(a)] = k++;
  }
  offsets_.assign(static_cast<std::size_t>(E_ + 1), 0);
  for (std::int64_t e = 0; e < E_; ++e) offsets_[e + 1] = offsets_[e] + kept[static_cast<std::size_t>(e)];
  dropped_ = N * K_ - offsets_[E_];
  for (std::int64_t a = 0; a < N * K_; ++a)
    if (pos_[a] >= 0) pos_[a] += offsets_[idx[a]];

  // Experts on their tokens: xp (M,C) -> SwiGLU per expert -> yp (M,C).
  const std::int64_t M = offsets_[E_];
  xp = Tensor::empty({M, C_}, DType::f32);
  const float* xd = x.data<float>();
  float* xpd = xp.data<float>();
  for (std::int64_t a = 0; a < N * K_; ++a)
    if (pos_[a] >= 0) std::copy_n(xd + (a / K_) * C_, C_, xpd + pos_[a] * C_);
  gp = Tensor::empty({M, H_}, DType::f32);
  upp = Tensor::empty({M, H_}, DType::f32);
  hp = Tensor::empty({M, H_}, DType::f32);
  yp = Tensor::empty({M, C_}, DType::f32);
  ops::grouped_matmul_forward(gp, xp, gate_.w, offsets_);
  ops::grouped_matmul_forward(upp, xp, up_.w, offsets_);
  ops::swiglu_forward(hp, gp, upp);
  ops::grouped_matmul_forward(yp, hp, down_.w, offsets_);

  // Combine: out = shared(x) + sum_i gate_i * y_i.
  if (shared_) shared_->forward(out, x);
  else out.zero();
  float* o = out.data<float>();
  const float *g = gates.data<float>(), *y = yp.data<float>();
  for (std::int64_t a = 0; a < N * K_; ++a)
    if (pos_[a] >= 0)
      for (std::int64_t c = 0; c < C_; ++c) o[(a / K_) * C_ + c] += g[a] * y[pos_[a] * C_ + c];

  // Sequence-wise balance loss: per sequence, f_e = E/(K T) * #tokens choosing e,
  // P_e = mean_t of the scores normalised over all experts; loss = coef * sum_e f_e P_e.
  if (aux_coef_ == 0) return 0.0;
  f_.assign(static_cast<std::size_t>(B * E_), 0.0);
  double aux = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    double* f = f_.data() + b * E_;
    std::vector<double> P(static_cast<std::size_t>(E_), 0.0);
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t n = b * T + t;
      for (std::int64_t i = 0; i < K_; ++i) f[idx[n * K_ + i]] += double(E_) / double(K_ * T);
      const float* s = scores.data<float>() + n * E_;
      double S = 0;
      for (std::int64_t e = 0; e < E_; ++e) S += s[e];
      for (std::int64_t e = 0; e < E_; ++e) P[e] += s[e] / S / double(T);
    }
    for (std::int64_t e = 0; e < E_; ++e) aux += aux_coef_ * f[e] * P[e];
  }
  return aux;
}

void MoE::backward(Tensor& dx, const Tensor& dout, const Tensor& x, double aux_scale) {
  const std::int64_t N = x.size(0), M = offsets_[E_];
  if (shared_) shared_->backward(dx, dout, x);
  else dx.zero();

  // Combine backward: dy_i = gate_i * dout; dgate_i = <dout, y_i>.
  Tensor dyp = Tensor::empty({M, C_}, DType::f32), dgates = Tensor::zeros({N, K_}, DType::f32);
  const float *d = dout.data<float>(), *g = gates.data<float>(), *y = yp.data<float>();
  float *dyd = dyp.data<float>(), *dgd = dgates.data<float>();
  for (std::int64_t a = 0; a < N * K_; ++a) {
    if (pos_[a] < 0) continue;
    const float* dn = d + (a / K_) * C_;
    float* dy = dyd + pos_[a] * C_;
    double dot = 0;
    for (std::int64_t c = 0; c < C_; ++c) {
      dy[c] = g[a] * dn[c];
      dot += double(dn[c]) * y[pos_[a] * C_ + c];
    }
    dgd[a] = static_cast<float>(dot);
  }

  // Experts backward on their tokens, then scatter dx back to the tokens.
  Tensor dhp = Tensor::empty({M, H_}, DType::f32), dgp = Tensor::empty({M, H_}, DType::f32),
         dup = Tensor::empty({M, H_}, DType::f32), dxp = Tensor::empty({M, C_}, DType::f32),
         tmp = Tensor::empty({M, C_}, DType::f32);
  ops::grouped_matmul_backward(dhp, down_.g, dyp, hp, down_.w, offsets_);
  ops::swiglu_backward(dgp, dup, dhp, gp, upp);
  ops::grouped_matmul_backward(dxp, gate_.g, dgp, xp, gate_.w, offsets_);
  ops::grouped_matmul_backward(tmp, up_.g, dup, xp, up_.w, offsets_);
  ops::accumulate(dxp, tmp);
  float* dxd = dx.data<float>();
  const float* dxpd = dxp.data<float>();
  for (std::int64_t a = 0; a < N * K_; ++a)
    if (pos_[a] >= 0)
      for (std::int64_t c = 0; c < C_; ++c) dxd[(a / K_) * C_ + c] += dxpd[pos_[a] * C_ + c];

  // Balance loss backward: dL/ds'_e = coef * f_e / T per token; s' = s / sum(s).
  Tensor dscores;
  if (aux_coef_ != 0 && aux_scale != 0) {
    dscores = Tensor::empty({N, E_}, DType::f32);
    float* ds = dscores.data<float>();
    for (std::int64_t n = 0; n < N; ++n) {
      const double* f = f_.data() + (n / T_) * E_;
      const float* s = scores.data<float>() + n * E_;
      double S = 0, dot = 0;
      for (std::int64_t e = 0; e < E_; ++e) S += s[e];
      for (std::int64_t e = 0; e < E_; ++e) dot += aux_coef_ * f[e] / double(T_) * s[e] / S;
      for (std::int64_t e = 0; e < E_; ++e)
        ds[n * E_ + e] = static_cast<float>(aux_scale * (aux_coef_ * f[e] / double(T_) - dot) / S);
    }
  }

  // Router backward: gates (and balance loss) -> logits -> x and the router weight.
  Tensor dlogits = Tensor::empty({N, E_}, DType::f32), dxr = Tensor::empty({N, C_}, DType::f32);
  ops::router_backward(dlogits, dgates, scores, index, spec_, dscores);
  ops::matmul_backward(dxr, router_.g, dlogits, x, router_.w);
  ops::accumulate(dx, dxr);
}

void MoE::update_bias(const std::vector<double>& global_load, double rate) {
  double mean = 0;
  for (double l : global_load) mean += l / double(E_);
  float* b = bias_.data<float>();
  for (std::int64_t e = 0; e < E_; ++e) {
    const double diff = mean - global_load[static_cast<std::size_t>(e)];
    b[e] += static_cast<float>(rate * double((diff > 0) - (diff < 0)));
  }
}

}  // namespace moe
