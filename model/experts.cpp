#include "model/experts.h"

#include "kernels/ops.h"

namespace moe {

GroupedExperts::GroupedExperts(const std::string& p, std::int64_t first, std::int64_t local, std::int64_t total,
                               std::int64_t C, std::int64_t H, Gemm gemm)
    : C_(C),
      H_(H),
      gemm_(gemm),
      gate_(p + "experts.gate_proj.weight", {local, H, C}),
      up_(p + "experts.up_proj.weight", {local, H, C}),
      down_(p + "experts.down_proj.weight", {local, C, H}) {
  for (Param* q : {&gate_, &up_, &down_}) q->expert_begin = first, q->experts_total = total;
}

void GroupedExperts::forward(Tensor& y, const GemmInput& x, std::span<const std::int64_t> offsets, Saved& s) {
  const std::int64_t M = x.rows();
  const Device dev = y.device();
  s.x = x;
  s.gate = Tensor::empty({M, H_}, DType::f32, dev), s.up = Tensor::empty({M, H_}, DType::f32, dev);
  Tensor h = Tensor::empty({M, H_}, DType::f32, dev);
  gemm_.grouped_forward(s.gate, x, gate_, offsets);
  gemm_.grouped_forward(s.up, x, up_, offsets);
  ops::swiglu_forward(h, s.gate, s.up);
  s.h = gemm_.keep(h);
  gemm_.grouped_forward(y, s.h, down_, offsets);
}

void GroupedExperts::backward(Tensor& dx, const Tensor& dy, std::span<const std::int64_t> offsets,
                              std::span<const std::int64_t> segments, const Saved& s) {
  const std::int64_t M = dy.size(0);
  const Device dev = dy.device();
  auto t = [&](std::int64_t width) { return Tensor::empty({M, width}, DType::f32, dev); };
  Tensor dh = t(H_), dgate = t(H_), dup = t(H_), dx_up = t(C_);
  gemm_.grouped_backward(dh, dy, s.h, down_, offsets, segments);
  ops::swiglu_backward(dgate, dup, dh, s.gate, s.up);
  gemm_.grouped_backward(dx, dgate, s.x, gate_, offsets, segments);
  gemm_.grouped_backward(dx_up, dup, s.x, up_, offsets, segments);
  ops::accumulate(dx, dx_up);
}

}  // namespace moe
