// One transformer block: x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x)). The FFN is dense for
// the first dense_layers blocks, MoE after (model/moe.h); the attention GQA or MLA.
// Explicit forward/backward; the activations saved by each sublayer.
#pragma once
#include <memory>

#include "config/model_config.h"
#include "model/attention.h"
#include "model/ffn.h"
#include "model/mla.h"
#include "model/moe.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

class Block {
 public:
  Block(const ModelConfig& c, std::int64_t layer, const ExpertGroup& ep, const TensorParallel& tp, Gemm gemm = Gemm());
  // aux_total (1) f64 on x's device += the balance loss of an MoE block (model/moe.h).
  void forward(Tensor& out, const Tensor& x, const Sequences& seq, Tensor& aux_total);
  void backward(Tensor& dx, const Tensor& dout, double aux_scale);
  // Inference with a KV cache (Attention::decode): out (N,C) of x (N,C), one sequence's new
  // tokens at positions past..; the FFN's routing as forward's (aux_total takes its losses).
  void decode(Tensor& out, const Tensor& x, KvCache::Layer& cache, std::int64_t past, Tensor& aux_total);
  KvCache::Layer new_cache(std::int64_t capacity, Device dev) const;
  void release();  // drop what forward saved but its input (recomputation)
  // What forward saved (see Attention::Saved), its only home: x the input, r1 and r2 the
  // norms' rstd, xm the residual after attention, h2 the router's input (MoE). The
  // sublayers' parts live in the sublayers until swap_saved takes them out.
  struct Saved {
    Tensor x, r1, xm, h2, r2;
    Attention::Saved attn;
    MlaAttention::Saved mla;
    SwiGLU::Saved dense;
    MoE::Saved moe;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&x, &r1, &xm, &h2, &r2}) b.add(*t);
      attn.count(b), mla.count(b), dense.count(b), moe.count(b);
    }
  };
  void swap_saved(Saved& s);
  const Tensor& input() const { return saved_.x; }  // what release() keeps
  ParamList params();
  MoE* moe() { return moe_.get(); }

 private:
  double eps_;
  TensorParallel tp_;
  Gemm gemm_;
  Param norm1_, norm2_;
  std::unique_ptr<Attention> attn_;  // gqa, or
  std::unique_ptr<MlaAttention> mla_;
  std::unique_ptr<SwiGLU> dense_;
  std::unique_ptr<MoE> moe_;
  Saved saved_;  // (its attn / mla, dense and moe parts live in the sublayers)
};

}  // namespace moe
