#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {
void check(const char* op, const Tensor& out, const char* out_name, const Tensor& gate, const Tensor& up) {
  MOE_CHECK(gate.defined() && (gate.dtype() == DType::f32 || gate.dtype() == DType::f64), ShapeError,
            "{}: gate must be f32 or f64, got {}", op, gate.describe());
  expect_tensor(op, "up", up, gate.dtype(), gate.shape());
  expect_tensor(op, out_name, out, gate.dtype(), gate.shape());
}
}  // namespace

void swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_forward";
  check(op, h, "h", gate, up);
  const auto gpu = detail::on_gpu(op, {&h, &gate, &up});
  detail::expect_f32_on_gpu(bool(gpu), op, gate);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::swiglu_forward(h.data<float>(), gate.data<float>(), up.data<float>(), gate.numel());
  }
  cpu::swiglu_forward(h, gate, up);
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  check(op, dh, "dh", gate, up);
  expect_tensor(op, "dgate", dgate, gate.dtype(), gate.shape());
  expect_tensor(op, "dup", dup, gate.dtype(), gate.shape());
  const auto gpu = detail::on_gpu(op, {&dgate, &dup, &dh, &gate, &up});
  detail::expect_f32_on_gpu(bool(gpu), op, gate);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::swiglu_backward(dgate.data<float>(), dup.data<float>(), dh.data<float>(), gate.data<float>(),
                                   up.data<float>(), gate.numel());
  }
  cpu::swiglu_backward(dgate, dup, dh, gate, up);
}

}  // namespace moe::ops
