// SwiGLU feed-forward: down(silu(gate(x)) * up(x)) (HF: mlp.{gate,up,down}_proj). Used for
// the dense FFN and for the shared experts (one SwiGLU of width shared * expert_hidden).
// Under tensor parallelism gate/up are column-parallel and down row-parallel: a rank holds
// hidden/tp of the width, and forward's output and backward's dx are partial sums the
// caller all-reduces over tp.
#pragma once
#include <utility>

#include "config/model_config.h"
#include "model/linear.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

class SwiGLU {
 public:
  // prefix "...mlp."; hidden: the whole width
  SwiGLU(std::int64_t d_model, std::int64_t hidden, const std::string& prefix,
         const TensorParallel& tp = TensorParallel(), Gemm gemm = Gemm());
  // (N,C) -> (N,C); x in the GEMMs' kept form (Gemm::keep; the MoE shares it with its experts).
  void forward(Tensor& out, const GemmInput& x);
  void backward(Tensor& dx, const Tensor& dout);  // dx assign, params +=
  const Gemm& gemm() const { return gemm_; }
  // What forward saved (see Attention::Saved): x and h are GEMM inputs (gate/up's, down's).
  struct Saved {
    Tensor gate, up;  // (N,F) the SwiGLU's inputs
    GemmInput x, h;   // (N,C), (N,F)
    void count(SavedBytes& b) const { b.add(gate), b.add(up), b.add(x), b.add(h); }
  };
  void swap_saved(Saved& s) { std::swap(saved_, s); }
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params() { return {&gate_proj_, &up_proj_, &down_proj_}; }

 private:
  std::int64_t C_, F_;  // F_: width held here
  Gemm gemm_;
  Param gate_proj_, up_proj_, down_proj_;
  Saved saved_;
};

}  // namespace moe
