// SwiGLU feed-forward: down(silu(gate(x)) * up(x)) (HF: mlp.{gate,up,down}_proj). Used for
// the dense FFN and for the shared experts (one SwiGLU of width shared * expert_hidden).
// Under tensor parallelism gate/up are column-parallel and down row-parallel: a rank holds
// hidden/tp of the width, and forward's output and backward's dx are partial sums the
// caller all-reduces over tp.
#pragma once
#include <utility>

#include "model/config.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

class SwiGLU {
 public:
  // prefix "...mlp."; hidden: the whole width
  SwiGLU(std::int64_t d_model, std::int64_t hidden, const std::string& prefix, const TensorParallel& tp = TensorParallel());
  void forward(Tensor& out, const Tensor& x);                    // (N,C) -> (N,C)
  void backward(Tensor& dx, const Tensor& dout, const Tensor& x);  // dx assign, params +=
  // What forward saved (see Attention::Saved).
  struct Saved {
    Tensor g, u, h;
  };
  void swap_saved(Saved& s) { std::swap(g, s.g), std::swap(u, s.u), std::swap(h, s.h); }
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params() { return {&gate_, &up_, &down_}; }

 private:
  std::int64_t C_, F_;  // F_: width held here
  Param gate_, up_, down_;
  Tensor g, u, h;  // saved (N,F)
};

}  // namespace moe
