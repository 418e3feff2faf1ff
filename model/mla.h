// Multi-head latent attention, as DeepSeek-V2/V3 and transformers' DeepseekV3Attention
// compute it (HF: self_attn.{q_a_proj, q_a_layernorm, q_b_proj | q_proj, kv_a_proj_with_mqa,
// kv_a_layernorm, kv_b_proj, o_proj}):
//   queries  q = q_b(norm(q_a(x)))  (or q_proj(x) without q_lora_rank), per head [nope | rope]
//   keys     [c | k_rope] = kv_a(x); [k_nope | v] = kv_b(norm(c)) per head; k_rope one part
//            that every head shares
//   RoPE on the rope parts only, with interleaved pairs (ops::RopePairs::interleaved)
//   softmax((q_nope.k_nope + q_rope.k_rope) / sqrt(qk_head_dim)) v, then o_proj
// The attention core is ops::attention_* over per-head vectors of D = max(qk_head_dim,
// v_head_dim), zero-padded (the padding adds nothing to a score or an output), with q
// scaled so that the core's 1/sqrt(D) becomes the model's 1/sqrt(qk_head_dim).
// Under tensor parallelism a rank holds n_heads/tp heads: q_b (or q_proj) and kv_b split by
// heads, o_proj row-parallel; the latent projections and their norms stay whole on every
// rank (computed there again) and their gradients are each rank's share (Param::tp_partial).
// Forward's output and backward's dx are partial sums, which the caller all-reduces over tp.
#pragma once
#include <utility>

#include "config/model_config.h"
#include "model/linear.h"
#include "model/param.h"
#include "model/rope_scaling.h"
#include "model/kv_cache.h"
#include "model/sequences.h"
#include "model/tensor_parallel.h"

namespace moe {

class MlaAttention {
 public:
  // prefix "model.layers.{i}.self_attn."
  MlaAttention(const ModelConfig& c, const std::string& prefix, const TensorParallel& tp = TensorParallel(),
               Gemm gemm = Gemm());
  // out (B*T,C) from x (B*T,C); saves what backward needs.
  void forward(Tensor& out, const Tensor& x, const Sequences& seq);
  // dx (B*T,C) (assign); parameter gradients accumulate.
  void backward(Tensor& dx, const Tensor& dout);
  // Inference with the compressed KV cache (kv_cache.h), as Attention::decode.
  void decode(Tensor& out, const Tensor& x, KvCache::Layer& cache, std::int64_t past);
  KvCache::Layer new_cache(std::int64_t capacity, Device dev) const;
  // What forward saved for backward (as Attention::Saved): the GEMM inputs in the precision's
  // form (x: q_a's or q_proj's and kv_a's; qn, cn: the normed latents; att: o_proj's), the
  // latents before their norms and the norms' rstd, and the core's q, k, v (B,T,H,D) with its
  // probabilities, or (o, lse) in the fused form; the document positions (Sequences).
  struct Saved {
    GemmInput x, qn, cn, att;
    Tensor qa, qa_rstd, c, c_rstd;
    Tensor q, k, v, probs, o, lse, positions;
    void count(SavedBytes& b) const {
      for (const GemmInput* g : {&x, &qn, &cn, &att}) b.add(*g);
      for (const Tensor* t : {&qa, &qa_rstd, &c, &c_rstd, &q, &k, &v, &probs, &o, &lse}) b.add(*t);
    }
  };
  void swap_saved(Saved& s) { std::swap(saved_, s); }
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params();

 private:
  // The core's per-head inputs from the projections: queries (B,T,H,D) from q (N, H*dqk),
  // rotated here; keys and values (B,T,H,D) from kv (N, H*(nope+dv)) and k_rope (N, rope),
  // the shared rotary key part already rotated.
  Tensor core_queries(const Tensor& q, const Sequences& seq) const;
  std::pair<Tensor, Tensor> core_keys_values(const Tensor& kv, const Tensor& k_rope, const Sequences& seq) const;
  // q (N, H*dqk) through its latent where there is one (s: what backward needs).
  Tensor queries(Saved& s) const;
  const Tensor& head_slots(std::int64_t N, Device dev);  // (N,H) i32: row n*H + h, to sum a part over heads
  // y = x's rotary parts (B*T*heads, rope) rotated: +1 forward, -1 backward.
  void rotate(Tensor& y, const Tensor& x, const Sequences& seq, std::int64_t heads, int direction) const;

  std::int64_t C_, H_, q_rank_, kv_rank_, nope_, rope_, dv_, dqk_, D_;
  double theta_, eps_, q_scale_;
  ops::RopeScaling scaling_;
  Gemm gemm_;
  Param q_a_, q_norm_, q_b_;  // without q_lora_rank, q_b_ is q_proj and the other two are unused
  Param kv_a_, kv_norm_, kv_b_, o_proj_;
  Saved saved_;
  Tensor slots_;  // head_slots' cache
};

}  // namespace moe
