// The routed experts held on this rank: El SwiGLU experts over rows grouped by expert, each
// projection one grouped GEMM (Gemm::grouped_*). Weights are one 3-D tensor per projection;
// expert j's slice is HF's mlp.experts.{j}.*_proj.weight. With redundant experts
// (model/replicas.h) R replica slots follow: their rows come after the owned experts', their
// weights are copies (not Params) and their gradients their own until folded into the owners'.
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
  // R replica slots on the Params' device (gradients only where the Params have them).
  void add_replica_slots(std::int64_t R);
  // Per projection (gate, up, down): the replicas' weights (R,H,C), (R,H,C), (R,C,H) and gradients.
  std::vector<Tensor>& replica_weights() { return replica_w_; }
  std::vector<Tensor>& replica_grads() { return replica_g_; }

 private:
  // One projection (params()[i]) over the grouped rows: the owned experts' by the Param, the
  // replicas' (rows from offsets[El] on) by their copies.
  void project(Tensor& y, const GemmInput& x, std::size_t i, std::span<const std::int64_t> offsets);
  void project_backward(Tensor& dx, const Tensor& dy, const GemmInput& x, std::size_t i,
                        std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments);

  std::int64_t C_, H_;  // d_model, expert_hidden
  Gemm gemm_;
  Param gate_, up_, down_;                     // (El,H,C), (El,H,C), (El,C,H)
  std::vector<Tensor> replica_w_, replica_g_;  // empty: no replica slots
};

}  // namespace moe
