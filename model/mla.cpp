#include "model/mla.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/ops.h"

namespace moe {

namespace {
constexpr auto kPairs = ops::RopePairs::interleaved;
Tensor f32(const Shape& s, Device d) { return Tensor::empty(s, DType::f32, d); }
}  // namespace

MlaAttention::MlaAttention(const ModelConfig& c, const std::string& p, const TensorParallel& tp, Gemm gemm)
    : C_(c.d_model),
      H_(tp.part(c.n_heads)),
      q_rank_(c.q_lora_rank),
      kv_rank_(c.kv_lora_rank),
      nope_(c.qk_nope_head_dim),
      rope_(c.qk_rope_head_dim),
      dv_(c.v_head_dim),
      dqk_(c.qk_nope_head_dim + c.qk_rope_head_dim),
      D_(std::max(dqk_, dv_)),
      theta_(c.rope_theta),
      eps_(c.norm_eps),
      // softmax scale 1/sqrt(qk_head_dim) (times YaRN's mscale^2), where the core divides by sqrt(D)
      q_scale_(std::sqrt(double(D_) / double(dqk_)) * mla_softmax_mscale(c)),
      scaling_(rope_scaling(c)),
      gemm_(gemm),
      q_a_(p + "q_a_proj.weight", {q_rank_, C_}),
      q_norm_(p + "q_a_layernorm.weight", {q_rank_}, false),
      q_b_(p + (q_rank_ > 0 ? "q_b_proj.weight" : "q_proj.weight"), {H_ * dqk_, q_rank_ > 0 ? q_rank_ : C_}),
      kv_a_(p + "kv_a_proj_with_mqa.weight", {kv_rank_ + rope_, C_}),
      kv_norm_(p + "kv_a_layernorm.weight", {kv_rank_}, false),
      kv_b_(p + "kv_b_proj.weight", {H_ * (nope_ + dv_), kv_rank_}),
      o_proj_(p + "o_proj.weight", {C_, H_ * dv_}) {
  tp.split(q_b_, 0, c.n_heads * dqk_);
  tp.split(kv_b_, 0, c.n_heads * (nope_ + dv_));
  tp.split(o_proj_, 1, c.n_heads * dv_);
  for (Param* q : {&q_a_, &q_norm_, &kv_a_, &kv_norm_}) tp.replicate(*q, /*partial_grad=*/true);
}

ParamList MlaAttention::params() {
  ParamList ps;
  if (q_rank_ > 0) ps = {&q_a_, &q_norm_};
  for (Param* q : {&q_b_, &kv_a_, &kv_norm_, &kv_b_, &o_proj_}) ps.push_back(q);
  return ps;
}

void MlaAttention::rotate(Tensor& y, const Tensor& x, const Sequences& seq, std::int64_t heads, int direction) const {
  Tensor y4 = y.view({seq.B, seq.T, heads, rope_});
  const Tensor x4 = x.view({seq.B, seq.T, heads, rope_});
  if (direction > 0) ops::rope_forward(y4, x4, theta_, kPairs, scaling_, seq.positions, seq.first);
  else ops::rope_backward(y4, x4, theta_, kPairs, scaling_, seq.positions, seq.first);
}

const Tensor& MlaAttention::head_slots(std::int64_t N, Device dev) {
  if (!slots_.defined() || slots_.size(0) != N || slots_.device() != dev) {
    std::vector<std::int32_t> rows(static_cast<std::size_t>(N * H_));
    std::iota(rows.begin(), rows.end(), 0);
    Tensor host = Tensor::empty({N, H_}, DType::i32);
    std::copy(rows.begin(), rows.end(), host.data<std::int32_t>());
    slots_ = host.to(dev);
  }
  return slots_;
}

Tensor MlaAttention::core_queries(const Tensor& q, const Sequences& seq) const {
  const std::int64_t R = seq.B * seq.T * H_;  // one row per (token, head)
  const Device dev = q.device();
  const Tensor qh = q.view({R, dqk_});
  Tensor q_rope = f32({R, rope_}, dev), q_rot = f32({R, rope_}, dev);
  ops::copy_columns(q_rope, 0, qh, nope_, rope_);
  rotate(q_rot, q_rope, seq, H_, +1);
  Tensor out = Tensor::zeros({R, D_}, DType::f32, dev);
  ops::copy_columns(out, 0, qh, 0, nope_);
  ops::copy_columns(out, nope_, q_rot, 0, rope_);
  ops::scale(out, q_scale_);
  return out.view({seq.B, seq.T, H_, D_});
}

std::pair<Tensor, Tensor> MlaAttention::core_keys_values(const Tensor& kv, const Tensor& k_rope,
                                                         const Sequences& seq) const {
  const std::int64_t R = seq.B * seq.T * H_;
  const Device dev = kv.device();
  const Tensor kvh = kv.view({R, nope_ + dv_});
  Tensor k = Tensor::zeros({R, D_}, DType::f32, dev), v = Tensor::zeros({R, D_}, DType::f32, dev);
  ops::copy_columns(k, 0, kvh, 0, nope_);
  ops::copy_columns(k, nope_, k_rope, 0, rope_, H_);  // every head's key shares it
  ops::copy_columns(v, 0, kvh, nope_, dv_);
  return {k.view({seq.B, seq.T, H_, D_}), v.view({seq.B, seq.T, H_, D_})};
}

Tensor MlaAttention::queries(Saved& s) const {
  const std::int64_t N = s.x.rows();
  const Device dev = s.x.x.device();
  Tensor q = f32({N, H_ * dqk_}, dev);
  if (q_rank_ > 0) {
    s.qa = f32({N, q_rank_}, dev), s.qa_rstd = f32({N}, dev);
    gemm_.forward(s.qa, s.x, q_a_);
    Tensor qn = f32({N, q_rank_}, dev);
    ops::rmsnorm_forward(qn, s.qa_rstd, s.qa, q_norm_.w, eps_);
    s.qn = gemm_.keep(qn);
    gemm_.forward(q, s.qn, q_b_);
  } else {
    gemm_.forward(q, s.x, q_b_);
  }
  return q;
}

void MlaAttention::forward(Tensor& out, const Tensor& xin, const Sequences& seq) {
  const std::int64_t B = seq.B, T = seq.T;
  const Tensor& positions = seq.positions;
  const std::int64_t N = B * T;
  const Device dev = xin.device();
  Saved& s = saved_;
  s.x = gemm_.keep(xin);
  s.positions = positions;
  // Queries, through their low-rank latent where there is one.
  const Tensor q = queries(s);
  // Keys and values from the latent c; the rotary key part beside it.
  Tensor ckv = f32({N, kv_rank_ + rope_}, dev), k_rope = f32({N, rope_}, dev), k_rot = f32({N, rope_}, dev);
  gemm_.forward(ckv, s.x, kv_a_);
  s.c = f32({N, kv_rank_}, dev), s.c_rstd = f32({N}, dev);
  ops::copy_columns(s.c, 0, ckv, 0, kv_rank_);
  ops::copy_columns(k_rope, 0, ckv, kv_rank_, rope_);
  rotate(k_rot, k_rope, seq, 1, +1);
  Tensor cn = f32({N, kv_rank_}, dev), kv = f32({N, H_ * (nope_ + dv_)}, dev);
  ops::rmsnorm_forward(cn, s.c_rstd, s.c, kv_norm_.w, eps_);
  s.cn = gemm_.keep(cn);
  gemm_.forward(kv, s.cn, kv_b_);
  s.q = core_queries(q, seq);
  std::tie(s.k, s.v) = core_keys_values(kv, k_rot, seq);
  // The core, as the GQA layer runs it (the fused form on a GPU under bf16 / fp8).
  Tensor a = f32({B, T, H_, D_}, dev);
  if (fused_attention_core(dev, gemm_.precision(), positions)) {
    s.lse = f32({B, H_, T}, dev);
    ops::attention_lse_forward(a, s.lse, s.q, s.k, s.v);
    s.o = a, s.probs = Tensor();
  } else {
    s.o = s.lse = Tensor();
    s.probs = f32({B, H_, T, T}, dev);
    ops::attention_forward(a, s.probs, s.q, s.k, s.v, positions);
  }
  Tensor att = f32({N * H_, dv_}, dev);
  ops::copy_columns(att, 0, a.view({N * H_, D_}), 0, dv_);
  s.att = gemm_.keep(att.view({N, H_ * dv_}));
  gemm_.forward(out, s.att, o_proj_);
}

KvCache::Layer MlaAttention::new_cache(std::int64_t capacity, Device dev) const {
  return {Tensor::zeros({capacity, kv_rank_}, DType::f32, dev), Tensor::zeros({capacity, rope_}, DType::f32, dev)};
}

// The new tokens' normed latent and rotated key part join the cache; every cached latent is
// expanded by kv_b into keys and values (the cache stays kv_rank + rope wide a token).
void MlaAttention::decode(Tensor& out, const Tensor& xin, KvCache::Layer& cache, std::int64_t past) {
  const std::int64_t N = xin.size(0), S = past + N;
  const Device dev = xin.device();
  Saved s;  // (the forward's scratch; nothing is kept)
  s.x = gemm_.keep(xin);
  const Tensor q = queries(s);
  Tensor ckv = f32({N, kv_rank_ + rope_}, dev), c = f32({N, kv_rank_}, dev), k_rope = f32({N, rope_}, dev),
         rstd = f32({N}, dev);
  gemm_.forward(ckv, s.x, kv_a_);
  ops::copy_columns(c, 0, ckv, 0, kv_rank_);
  ops::copy_columns(k_rope, 0, ckv, kv_rank_, rope_);
  Tensor cn = cache.a.rows(past, N), k_rot = cache.b.rows(past, N);
  ops::rmsnorm_forward(cn, rstd, c, kv_norm_.w, eps_);
  const Sequences fresh{1, N, Tensor(), past}, all{1, S, Tensor(), 0};
  rotate(k_rot, k_rope, fresh, 1, +1);
  Tensor kv = f32({S, H_ * (nope_ + dv_)}, dev);
  gemm_.forward(kv, gemm_.keep(cache.a.rows(0, S)), kv_b_);
  const auto [k, v] = core_keys_values(kv, cache.b.rows(0, S), all);
  Tensor a = f32({1, N, H_, D_}, dev), att = f32({N * H_, dv_}, dev);
  ops::attention_cached_forward(a, core_queries(q, fresh), k, v);
  ops::copy_columns(att, 0, a.view({N * H_, D_}), 0, dv_);
  gemm_.forward(out, gemm_.keep(att.view({N, H_ * dv_})), o_proj_);
}

void MlaAttention::backward(Tensor& dx, const Tensor& dout) {
  const Saved& s = saved_;
  const std::int64_t N = s.x.rows(), R = N * H_;
  const Sequences seq{s.q.size(0), s.q.size(1), s.positions};
  const Device dev = dout.device();
  // o_proj, then the core (its padded columns get no gradient).
  Tensor datt = f32({N, H_ * dv_}, dev), da = Tensor::zeros({R, D_}, DType::f32, dev);
  gemm_.backward(datt, dout, s.att, o_proj_);
  ops::copy_columns(da, 0, datt.view({R, dv_}), 0, dv_);
  Tensor dq = f32(s.q.shape(), dev), dk = f32(s.k.shape(), dev), dv = f32(s.v.shape(), dev);
  if (s.lse.defined()) ops::attention_lse_backward(dq, dk, dv, da.view(s.q.shape()), s.q, s.k, s.v, s.o, s.lse);
  else ops::attention_backward(dq, dk, dv, da.view(s.q.shape()), s.q, s.k, s.v, s.probs);
  const Tensor dqh = dq.view({R, D_}), dkh = dk.view({R, D_}), dvh = dv.view({R, D_});
  // Keys and values: [dk_nope | dv] per head into kv_b; the shared rotary part summed over
  // heads, rotated back, beside the latent's gradient into kv_a.
  Tensor dkv = f32({R, nope_ + dv_}, dev), dk_rot_h = f32({R, rope_}, dev), dk_rot = f32({N, rope_}, dev);
  ops::copy_columns(dkv, 0, dkh, 0, nope_);
  ops::copy_columns(dkv, nope_, dvh, 0, dv_);
  ops::copy_columns(dk_rot_h, 0, dkh, nope_, rope_);
  ops::combine_rows(dk_rot, dk_rot_h, head_slots(N, dev), Tensor(), false);
  Tensor dk_rope = f32({N, rope_}, dev), dcn = f32({N, kv_rank_}, dev), dc = f32({N, kv_rank_}, dev);
  rotate(dk_rope, dk_rot, seq, 1, -1);
  gemm_.backward(dcn, dkv.view({N, H_ * (nope_ + dv_)}), s.cn, kv_b_);
  ops::rmsnorm_backward(dc, kv_norm_.g, dcn, s.c, kv_norm_.w, s.c_rstd);
  Tensor dckv = f32({N, kv_rank_ + rope_}, dev);
  ops::copy_columns(dckv, 0, dc, 0, kv_rank_);
  ops::copy_columns(dckv, kv_rank_, dk_rope, 0, rope_);
  gemm_.backward(dx, dckv, s.x, kv_a_);
  // Queries: [dq_nope | the rotary part rotated back], scaled as forward scaled them.
  Tensor dq_full = f32({R, dqk_}, dev), dq_rot = f32({R, rope_}, dev), dq_rope = f32({R, rope_}, dev);
  ops::copy_columns(dq_full, 0, dqh, 0, nope_);
  ops::copy_columns(dq_rot, 0, dqh, nope_, rope_);
  rotate(dq_rope, dq_rot, seq, H_, -1);
  ops::copy_columns(dq_full, nope_, dq_rope, 0, rope_);
  ops::scale(dq_full, q_scale_);
  Tensor tmp = f32({N, C_}, dev);
  const Tensor dqp = dq_full.view({N, H_ * dqk_});
  if (q_rank_ > 0) {
    Tensor dqn = f32({N, q_rank_}, dev), dqa = f32({N, q_rank_}, dev);
    gemm_.backward(dqn, dqp, s.qn, q_b_);
    ops::rmsnorm_backward(dqa, q_norm_.g, dqn, s.qa, q_norm_.w, s.qa_rstd);
    gemm_.backward(tmp, dqa, s.x, q_a_);
  } else {
    gemm_.backward(tmp, dqp, s.x, q_b_);
  }
  ops::accumulate(dx, tmp);
}

}  // namespace moe
