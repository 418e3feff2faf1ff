// Causal self-attention with RoPE and grouped KV heads (HF: self_attn.{q,k,v,o}_proj).
// Under tensor parallelism a rank holds n_heads/tp query heads and n_kv_heads/tp kv heads
// (q, k, v column-parallel, o row-parallel): forward's output and backward's dx are this
// rank's partial sums, which the caller all-reduces over tp.
#pragma once
#include <utility>

#include "model/config.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

class Attention {
 public:
  // prefix "model.layers.{i}.self_attn."
  Attention(const ModelConfig& c, const std::string& prefix, const TensorParallel& tp = TensorParallel());
  // out (B*T,C) from x (B*T,C); saves what backward needs.
  void forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T);
  // dx (B*T,C) (assign); parameter gradients accumulate.
  void backward(Tensor& dx, const Tensor& dout, const Tensor& x);
  // What forward saved for backward. swap_saved trades it with s: a pipeline stage keeps one
  // per micro-batch in flight. release() drops it (recomputation).
  struct Saved {
    Tensor q, k, v, probs, att;
  };
  void swap_saved(Saved& s) { std::swap(q, s.q), std::swap(k, s.k), std::swap(v, s.v), std::swap(probs, s.probs), std::swap(att, s.att); }
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params() { return {&q_, &k_, &v_, &o_}; }

 private:
  std::int64_t C_, H_, Hkv_, D_;  // heads held here
  double theta_;
  Param q_, k_, v_, o_;
  Tensor q, k, v, probs, att;  // saved activations: q, k after RoPE (B,T,H|Hkv,D)
};

}  // namespace moe
