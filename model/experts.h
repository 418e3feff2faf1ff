// The routed experts held on this rank: El SwiGLU experts over rows grouped by expert, each
// projection one grouped GEMM (Gemm::grouped_*). Weights are one 3-D tensor per projection;
// expert j's slice is HF's mlp.experts.{j}.*_proj.weight.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "model/linear.h"
#include "model/param.h"

namespace moe {

class GroupedExperts {
 public:
  // Experts [first, first + local) of `total`, d_model C, hidden H; prefix "...mlp.".
  GroupedExperts(const std::string& prefix, std::int64_t first, std::int64_t local, std::int64_t total, std::int64_t C,
                 std::int64_t H, Gemm gemm);
  // What forward saved for backward: the GEMM inputs and the SwiGLU's two inputs (Me,H).
  struct Saved {
    GemmInput x, h;  // (Me,C), (Me,H)
    Tensor gate, up;
    void count(SavedBytes& b) const { b.add(x), b.add(h), b.add(gate), b.add(up); }
  };
  // y (Me,C) = down(silu(gate(x)) * up(x)) per expert, rows [offsets[l], offsets[l+1]) expert l.
  void forward(Tensor& y, const GemmInput& x, std::span<const std::int64_t> offsets, Saved& s);
  // dx (Me,C) (assign); parameters +=. segments: the FP8 weight-gradient tiles (Gemm).
  void backward(Tensor& dx, const Tensor& dy, std::span<const std::int64_t> offsets,
                std::span<const std::int64_t> segments, const Saved& s);
  ParamList params() { return {&gate_, &up_, &down_}; }

 private:
  std::int64_t C_, H_;  // d_model, expert_hidden
  Gemm gemm_;
  Param gate_, up_, down_;  // (El,H,C), (El,H,C), (El,C,H)
};

}  // namespace moe
