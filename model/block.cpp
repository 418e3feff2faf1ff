#include "model/block.h"

#include <utility>

#include <fmt/format.h>

#include "kernels/ops.h"

namespace moe {

Block::Block(const ModelConfig& c, std::int64_t i, const ExpertGroup& ep, const TensorParallel& tp, Gemm gemm)
    : eps_(c.norm_eps),
      tp_(tp),
      gemm_(gemm),
      norm1_(fmt::format("model.layers.{}.input_layernorm.weight", i), {c.d_model}, false),
      norm2_(fmt::format("model.layers.{}.post_attention_layernorm.weight", i), {c.d_model}, false) {
  const std::string attn = fmt::format("model.layers.{}.self_attn.", i);
  if (c.attention == AttentionType::mla) mla_ = std::make_unique<MlaAttention>(c, attn, tp, gemm);
  else attn_ = std::make_unique<Attention>(c, attn, tp, gemm);
  tp.replicate(norm1_);
  tp.replicate(norm2_);
  const std::string mlp = fmt::format("model.layers.{}.mlp.", i);
  if (i < c.dense_layers || c.routed_experts == 0)
    dense_ = std::make_unique<SwiGLU>(c.d_model, c.ffn_hidden, mlp, tp, gemm);
  else moe_ = std::make_unique<MoE>(c, mlp, ep, tp, gemm);
}

ParamList Block::params() {
  ParamList ps = {&norm1_};
  for (Param* p : attn_ ? attn_->params() : mla_->params()) ps.push_back(p);
  ps.push_back(&norm2_);
  for (Param* p : dense_ ? dense_->params() : moe_->params()) ps.push_back(p);
  return ps;
}

void Block::forward(Tensor& out, const Tensor& x, const Sequences& seq, Tensor& aux_total) {
  const std::int64_t N = x.size(0), C = x.size(1);
  auto t = [&](Shape shape) { return Tensor::empty(std::move(shape), DType::f32, x.device()); };
  Saved& s = saved_;
  // The norms' outputs are GEMM inputs: the layers keep them in their precision's form (the
  // router's input h2 stays FP32).
  Tensor h1 = t({N, C});
  s.x = x, s.r1 = t({N}), s.xm = t({N, C}), s.h2 = t({N, C}), s.r2 = t({N});
  ops::rmsnorm_forward(h1, s.r1, x, norm1_.w, eps_);
  if (attn_) attn_->forward(s.xm, h1, seq);
  else mla_->forward(s.xm, h1, seq);
  tp_.all_reduce(s.xm);      // tp: the row-parallel o_proj's partial sums
  ops::accumulate(s.xm, x);  // xm = x + attn(norm(x))
  ops::rmsnorm_forward(s.h2, s.r2, s.xm, norm2_.w, eps_);
  if (dense_) {
    dense_->forward(out, gemm_.keep(s.h2));
    s.h2 = Tensor();  // the dense FFN keeps its input in its GEMM's form
  } else {
    moe_->forward(out, s.h2, seq.B, seq.T, aux_total);
  }
  tp_.all_reduce(out);
  ops::accumulate(out, s.xm);  // out = xm + ffn(norm(xm))
}

KvCache::Layer Block::new_cache(std::int64_t capacity, Device dev) const {
  return attn_ ? attn_->new_cache(capacity, dev) : mla_->new_cache(capacity, dev);
}

void Block::decode(Tensor& out, const Tensor& x, KvCache::Layer& cache, std::int64_t past, Tensor& aux_total) {
  const std::int64_t N = x.size(0), C = x.size(1);
  auto t = [&](Shape shape) { return Tensor::empty(std::move(shape), DType::f32, x.device()); };
  Tensor h1 = t({N, C}), xm = t({N, C}), h2 = t({N, C}), r1 = t({N}), r2 = t({N});
  ops::rmsnorm_forward(h1, r1, x, norm1_.w, eps_);
  if (attn_) attn_->decode(xm, h1, cache, past);
  else mla_->decode(xm, h1, cache, past);
  ops::accumulate(xm, x);
  ops::rmsnorm_forward(h2, r2, xm, norm2_.w, eps_);
  if (dense_) dense_->forward(out, gemm_.keep(h2));
  else moe_->forward(out, h2, 1, N, aux_total);
  ops::accumulate(out, xm);
}

void Block::swap_saved(Saved& s) {
  Attention::Saved attn = std::move(s.attn);
  MlaAttention::Saved mla = std::move(s.mla);
  SwiGLU::Saved dense = std::move(s.dense);
  MoE::Saved moe = std::move(s.moe);
  std::swap(saved_, s);
  if (attn_) attn_->swap_saved(attn), s.attn = std::move(attn);
  else mla_->swap_saved(mla), s.mla = std::move(mla);
  if (dense_) dense_->swap_saved(dense), s.dense = std::move(dense);
  else moe_->swap_saved(moe), s.moe = std::move(moe);
}

void Block::release() {
  Saved none;
  swap_saved(none);
  saved_.x = std::move(none.x);  // the input stays: recomputation starts from it
}

void Block::backward(Tensor& dx, const Tensor& dout, double aux_scale) {
  const Saved& s = saved_;
  const std::int64_t N = s.x.size(0), C = s.x.size(1);
  Tensor dh = Tensor::empty({N, C}, DType::f32, dout.device()), dxm = Tensor::empty({N, C}, DType::f32, dout.device());
  if (dense_) dense_->backward(dh, dout);
  else moe_->backward(dh, dout, s.h2, aux_scale);
  tp_.all_reduce(dh);  // tp: column-parallel inputs' partial gradients
  ops::rmsnorm_backward(dxm, norm2_.g, dh, s.xm, norm2_.w, s.r2);
  ops::accumulate(dxm, dout);  // residual
  if (attn_) attn_->backward(dh, dxm);
  else mla_->backward(dh, dxm);
  tp_.all_reduce(dh);
  ops::rmsnorm_backward(dx, norm1_.g, dh, s.x, norm1_.w, s.r1);
  ops::accumulate(dx, dxm);  // residual
}

}  // namespace moe
