#include "model/moe.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace moe {

MoE::MoE(const ModelConfig& c, const std::string& p, Communicator* ep)
    : C_(c.d_model), E_(c.routed_experts), K_(c.top_k), H_(c.expert_hidden), ep_(ep),
      ep_rank_(ep ? ep->rank() : 0), ep_size_(ep ? ep->size() : 1), El_(E_ / ep_size_),
      spec_{.kind = c.router == RouterType::sigmoid ? ops::RouterKind::sigmoid : ops::RouterKind::softmax,
            .top_k = static_cast<int>(c.top_k), .n_groups = static_cast<int>(c.n_groups),
            .topk_groups = static_cast<int>(c.topk_groups), .normalize = c.router_normalize,
            .scaling = c.routed_scaling_factor},
      capacity_factor_(c.capacity_factor), aux_coef_(c.aux_loss_coef),
      router_(p + "gate.weight", {E_, C_}), bias_name_(p + "gate.e_score_correction_bias"),
      bias_(Tensor::zeros({E_}, DType::f32)),
      // One 3-D tensor per projection; expert j's slice is HF's mlp.experts.{j}.*_proj.weight.
      gate_(p + "experts.gate_proj.weight", {El_, H_, C_}), up_(p + "experts.up_proj.weight", {El_, H_, C_}),
      down_(p + "experts.down_proj.weight", {El_, C_, H_}), load_(static_cast<std::size_t>(E_)) {
  MOE_CHECK(E_ % ep_size_ == 0, ConfigError, "{}: {} routed experts cannot be split over {} expert-parallel ranks", p,
            E_, ep_size_);
  for (Param* q : {&gate_, &up_, &down_}) q->expert_begin = ep_rank_ * El_, q->experts_total = E_;
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

  // Fan-out: the most expert-parallel ranks one token's kept assignments reach (group-limited
  // routing bounds it by topk_groups when the groups map onto ranks), and the traffic the
  // routing implies: rows sent to other ranks, and distinct (token, other rank) pairs (what
  // a dispatch that sends a token once per rank would move).
  max_ranks_ = 1;
  remote_rows_ = remote_token_ranks_ = 0;
  if (ep_size_ > 1)
    for (std::int64_t n = 0; n < N; ++n) {
      std::uint64_t ranks = 0;  // bit j: rank j reached (ep <= 64 for these statistics)
      for (std::int64_t i = 0; i < K_; ++i)
        if (pos_[n * K_ + i] >= 0) {
          const auto owner = idx[n * K_ + i] / El_;
          ranks |= std::uint64_t{1} << (owner % 64);
          remote_rows_ += owner != ep_rank_;
        }
      max_ranks_ = std::max(max_ranks_, std::popcount(ranks));
      remote_token_ranks_ += std::popcount(ranks & ~(std::uint64_t{1} << (ep_rank_ % 64)));
    }

  // Permute: xp (M,C) holds the kept assignments' rows grouped by expert.
  const std::int64_t M = offsets_[E_];
  xp = Tensor::empty({M, C_}, DType::f32);
  const float* xd = x.data<float>();
  float* xpd = xp.data<float>();
  for (std::int64_t a = 0; a < N * K_; ++a)
    if (pos_[a] >= 0) std::copy_n(xd + (a / K_) * C_, C_, xpd + pos_[a] * C_);

  // Dispatch to the experts' ranks, run the local experts as grouped GEMMs, bring the rows back.
  plan_dispatch(kept);
  xe = dispatch(xp);
  const std::int64_t Ml = xe.size(0);
  ge = Tensor::empty({Ml, H_}, DType::f32);
  ue = Tensor::empty({Ml, H_}, DType::f32);
  he = Tensor::empty({Ml, H_}, DType::f32);
  Tensor ye = Tensor::empty({Ml, C_}, DType::f32);
  ops::grouped_matmul_forward(ge, xe, gate_.w, local_offsets_);
  ops::grouped_matmul_forward(ue, xe, up_.w, local_offsets_);
  ops::swiglu_forward(he, ge, ue);
  ops::grouped_matmul_forward(ye, he, down_.w, local_offsets_);
  yp = combine(ye);

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

  // Output gradients travel like the dispatch; the experts' input gradients come back.
  const Tensor dye = dispatch(dyp);
  const std::int64_t Ml = xe.size(0);
  Tensor dhe = Tensor::empty({Ml, H_}, DType::f32), dge = Tensor::empty({Ml, H_}, DType::f32),
         due = Tensor::empty({Ml, H_}, DType::f32), dxe = Tensor::empty({Ml, C_}, DType::f32),
         tmp = Tensor::empty({Ml, C_}, DType::f32);
  ops::grouped_matmul_backward(dhe, down_.g, dye, he, down_.w, local_offsets_);
  ops::swiglu_backward(dge, due, dhe, ge, ue);
  ops::grouped_matmul_backward(dxe, gate_.g, dge, xe, gate_.w, local_offsets_);
  ops::grouped_matmul_backward(tmp, up_.g, due, xe, up_.w, local_offsets_);
  ops::accumulate(dxe, tmp);
  const Tensor dxp = combine(dxe);
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

// Counts first: every rank learns how many rows each source sends to each of its experts,
// which sizes the payload exchange and orders the received rows by local expert.
void MoE::plan_dispatch(const std::vector<std::int64_t>& kept) {
  const auto p = static_cast<std::size_t>(ep_size_);
  send_rows_.assign(p, 0);
  recv_rows_.assign(p, 0);
  local_offsets_.assign(static_cast<std::size_t>(El_ + 1), 0);
  if (ep_size_ == 1) {
    send_rows_[0] = recv_rows_[0] = offsets_[E_];
    local_offsets_ = offsets_;
    return;
  }
  Tensor mine = Tensor::empty({E_}, DType::i32), got = Tensor::empty({E_}, DType::i32);  // (p,El)
  for (std::int64_t e = 0; e < E_; ++e) mine.data<std::int32_t>()[e] = static_cast<std::int32_t>(kept[std::size_t(e)]);
  const std::vector<std::int64_t> per_rank(p, El_);
  ep_->all_to_all_v(got, per_rank, mine, per_rank);
  const std::int32_t* g = got.data<std::int32_t>();  // g[s*El + l]: rows from source s for local expert l
  for (std::size_t j = 0; j < p; ++j) {
    send_rows_[j] = offsets_[std::int64_t(j + 1) * El_] - offsets_[std::int64_t(j) * El_];
    for (std::int64_t l = 0; l < El_; ++l) recv_rows_[j] += g[std::int64_t(j) * El_ + l];
  }
  for (std::int64_t l = 0; l < El_; ++l) {
    local_offsets_[l + 1] = local_offsets_[l];
    for (std::size_t s = 0; s < p; ++s) local_offsets_[l + 1] += g[std::int64_t(s) * El_ + l];
  }
  // Received rows arrive source-major, each source's rows expert-major; xe is expert-major,
  // each expert's rows source-major.
  perm_.resize(static_cast<std::size_t>(local_offsets_[El_]));
  std::vector<std::int64_t> next(local_offsets_.begin(), local_offsets_.end() - 1);
  std::size_t r = 0;
  for (std::size_t s = 0; s < p; ++s)
    for (std::int64_t l = 0; l < El_; ++l)
      for (std::int32_t k = 0; k < g[std::int64_t(s) * El_ + l]; ++k) perm_[r++] = next[std::size_t(l)]++;
}

Tensor MoE::dispatch(const Tensor& rows) {
  if (ep_size_ == 1) return rows;
  const std::int64_t W = rows.size(1);
  Tensor got = Tensor::empty({local_offsets_[El_], W}, DType::f32), out = Tensor::empty({local_offsets_[El_], W}, DType::f32);
  ep_->all_to_all_v(got, recv_rows_, rows, send_rows_);
  const float* g = got.data<float>();
  float* o = out.data<float>();
  for (std::size_t r = 0; r < perm_.size(); ++r) std::copy_n(g + std::int64_t(r) * W, W, o + perm_[r] * W);
  return out;
}

Tensor MoE::combine(const Tensor& rows) {
  if (ep_size_ == 1) return rows;
  const std::int64_t W = rows.size(1);
  Tensor back = Tensor::empty({local_offsets_[El_], W}, DType::f32), out = Tensor::empty({offsets_[E_], W}, DType::f32);
  const float* in = rows.data<float>();
  float* b = back.data<float>();
  for (std::size_t r = 0; r < perm_.size(); ++r) std::copy_n(in + perm_[r] * W, W, b + std::int64_t(r) * W);
  ep_->all_to_all_v(out, send_rows_, back, recv_rows_);
  return out;
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
