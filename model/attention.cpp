#include "model/attention.h"

#include "kernels/ops.h"

namespace moe {

Attention::Attention(const ModelConfig& c, const std::string& p, const TensorParallel& tp, Gemm gemm)
    : C_(c.d_model),
      H_(tp.part(c.n_heads)),
      Hkv_(tp.part(c.n_kv_heads)),
      D_(c.d_model / c.n_heads),
      theta_(c.rope_theta),
      scaling_(rope_scaling(c)),
      gemm_(gemm),
      q_proj_(p + "q_proj.weight", {H_ * D_, C_}),
      k_proj_(p + "k_proj.weight", {Hkv_ * D_, C_}),
      v_proj_(p + "v_proj.weight", {Hkv_ * D_, C_}),
      o_proj_(p + "o_proj.weight", {C_, H_ * D_}) {
  tp.split(q_proj_, 0, c.n_heads * D_);
  tp.split(k_proj_, 0, c.n_kv_heads * D_);
  tp.split(v_proj_, 0, c.n_kv_heads * D_);
  tp.split(o_proj_, 1, c.n_heads * D_);
}

void Attention::forward(Tensor& out, const Tensor& xin, const Sequences& seq) {
  const std::int64_t B = seq.B, T = seq.T;
  const Tensor& positions = seq.positions;
  const std::int64_t N = B * T;
  const Device dev = xin.device();
  Saved& s = saved_;
  auto& [q, k, v, probs, o, lse, pos, x, att] = s;
  pos = positions;
  x = gemm_.keep(xin);
  q = Tensor::empty({N, H_ * D_}, DType::f32, dev);
  k = Tensor::empty({N, Hkv_ * D_}, DType::f32, dev);
  v = Tensor::empty({N, Hkv_ * D_}, DType::f32, dev);
  gemm_.forward(q, x, q_proj_);
  gemm_.forward(k, x, k_proj_);
  gemm_.forward(v, x, v_proj_);
  q = q.view({B, T, H_, D_});
  k = k.view({B, T, Hkv_, D_});
  v = v.view({B, T, Hkv_, D_});
  ops::rope_forward(q, q, theta_, ops::RopePairs::half, scaling_, pos);
  ops::rope_forward(k, k, theta_, ops::RopePairs::half, scaling_, pos);
  Tensor a = Tensor::empty({B, T, H_, D_}, DType::f32, dev);
  if (fused_attention_core(dev, gemm_.precision(), pos)) {
    lse = Tensor::empty({B, H_, T}, DType::f32, dev);  // cuDNN's fused SDPA, BF16 like the GEMMs around it
    ops::attention_lse_forward(a, lse, q, k, v);
    o = a, probs = Tensor();
  } else {
    o = lse = Tensor();
    probs = Tensor::empty({B, H_, T, T}, DType::f32, dev);
    ops::attention_forward(a, probs, q, k, v, pos);
  }
  att = gemm_.keep(a.view({N, H_ * D_}));
  gemm_.forward(out, att, o_proj_);
}

KvCache::Layer Attention::new_cache(std::int64_t capacity, Device dev) const {
  return {Tensor::zeros({capacity, Hkv_ * D_}, DType::f32, dev), Tensor::zeros({capacity, Hkv_ * D_}, DType::f32, dev)};
}

void Attention::decode(Tensor& out, const Tensor& xin, KvCache::Layer& cache, std::int64_t past) {
  const std::int64_t N = xin.size(0), S = past + N;
  const Device dev = xin.device();
  const GemmInput x = gemm_.keep(xin);
  Tensor q = Tensor::empty({N, H_ * D_}, DType::f32, dev), k = cache.a.rows(past, N), v = cache.b.rows(past, N);
  gemm_.forward(q, x, q_proj_);
  gemm_.forward(k, x, k_proj_);  // (straight into the cache)
  gemm_.forward(v, x, v_proj_);
  Tensor q4 = q.view({1, N, H_, D_}), k4 = k.view({1, N, Hkv_, D_});
  ops::rope_forward(q4, q4, theta_, ops::RopePairs::half, scaling_, Tensor(), past);
  ops::rope_forward(k4, k4, theta_, ops::RopePairs::half, scaling_, Tensor(), past);
  Tensor a = Tensor::empty({1, N, H_, D_}, DType::f32, dev);
  ops::attention_cached_forward(a, q4, cache.a.rows(0, S).view({1, S, Hkv_, D_}),
                                cache.b.rows(0, S).view({1, S, Hkv_, D_}));
  gemm_.forward(out, gemm_.keep(a.view({N, H_ * D_})), o_proj_);
}

void Attention::backward(Tensor& dx, const Tensor& dout) {
  const auto& [q, k, v, probs, o, lse, pos, x, att] = saved_;
  const std::int64_t N = x.rows();
  const Device dev = dout.device();
  Tensor datt = Tensor::empty({N, H_ * D_}, DType::f32, dev);
  gemm_.backward(datt, dout, att, o_proj_);
  Tensor dq = Tensor::empty(q.shape(), DType::f32, dev), dk = Tensor::empty(k.shape(), DType::f32, dev),
         dv = Tensor::empty(v.shape(), DType::f32, dev);
  if (lse.defined()) ops::attention_lse_backward(dq, dk, dv, datt.view(q.shape()), q, k, v, o, lse);
  else ops::attention_backward(dq, dk, dv, datt.view(q.shape()), q, k, v, probs);
  ops::rope_backward(dq, dq, theta_, ops::RopePairs::half, scaling_, pos);
  ops::rope_backward(dk, dk, theta_, ops::RopePairs::half, scaling_, pos);
  Tensor tmp = Tensor::empty({N, C_}, DType::f32, dev);
  gemm_.backward(dx, dq.view({N, H_ * D_}), x, q_proj_);
  gemm_.backward(tmp, dk.view({N, Hkv_ * D_}), x, k_proj_);
  ops::accumulate(dx, tmp);
  gemm_.backward(tmp, dv.view({N, Hkv_ * D_}), x, v_proj_);
  ops::accumulate(dx, tmp);
}

}  // namespace moe
