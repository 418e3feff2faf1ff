// Causal self-attention with RoPE and grouped KV heads (HF: self_attn.{q,k,v,o}_proj).
// Under tensor parallelism a rank holds n_heads/tp query heads and n_kv_heads/tp kv heads
// (q, k, v column-parallel, o row-parallel): forward's output and backward's dx are this
// rank's partial sums, which the caller all-reduces over tp.
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

class Attention {
 public:
  // prefix "model.layers.{i}.self_attn."
  Attention(const ModelConfig& c, const std::string& prefix, const TensorParallel& tp = TensorParallel(),
            Gemm gemm = Gemm());
  // out (B*T,C) from x (B*T,C); saves what backward needs (x in the GEMMs' kept form).
  void forward(Tensor& out, const Tensor& x, const Sequences& seq);
  // dx (B*T,C) (assign); parameter gradients accumulate.
  void backward(Tensor& dx, const Tensor& dout);
  // Inference with a KV cache: out (N,C) of one sequence's N new tokens x (N,C) at positions
  // past.., whose keys and values join `cache` (rows past..past+N-1) first. Saves nothing.
  void decode(Tensor& out, const Tensor& x, KvCache::Layer& cache, std::int64_t past);
  KvCache::Layer new_cache(std::int64_t capacity, Device dev) const;
  // What forward saved for backward. swap_saved trades it with s: a pipeline stage keeps one
  // per micro-batch in flight. release() drops it (recomputation). x and att are GEMM inputs
  // (q/k/v's and o's), kept in the precision's form; the attention core's stay FP32. The
  // core keeps its probabilities, or on a GPU under bf16 / fp8 with cuDNN (the fused form,
  // ops::attention_lse_*) only its output o and the softmax's log-sum-exp per row.
  // positions: the document positions forward ran with (Sequences), for RoPE's backward.
  struct Saved {
    Tensor q, k, v, probs, o, lse, positions;
    GemmInput x, att;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&q, &k, &v, &probs, &o, &lse}) b.add(*t);
      b.add(x), b.add(att);
    }
  };
  void swap_saved(Saved& s) { std::swap(saved_, s); }
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params() { return {&q_proj_, &k_proj_, &v_proj_, &o_proj_}; }

 private:
  std::int64_t C_, H_, Hkv_, D_;  // heads held here
  double theta_;
  ops::RopeScaling scaling_;
  Gemm gemm_;
  Param q_proj_, k_proj_, v_proj_, o_proj_;
  // q, k after RoPE (B,T,H|Hkv,D); probs or (o, lse); x (N,C), att (N,H*D).
  Saved saved_;
};

}  // namespace moe
