#include <cmath>

#include "kernels/cpu/common.h"
#include "kernels/cpu/exp.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

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
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(gate.dtype() == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, gate.describe());
    return cuda::swiglu_forward(h.data<float>(), gate.data<float>(), up.data<float>(), gate.numel());
#endif
  }
  detail::dispatch_real(gate.dtype(), [&]<class T>() {
    const T *g = gate.data<T>(), *u = up.data<T>();
    T* o = h.data<T>();
    const std::int64_t n = gate.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) o[i] = g[i] / (T(1) + detail::exp(-g[i])) * u[i];
  });
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_backward";
  check(op, dh, "dh", gate, up);
  expect_tensor(op, "dgate", dgate, gate.dtype(), gate.shape());
  expect_tensor(op, "dup", dup, gate.dtype(), gate.shape());
  const auto gpu = detail::on_gpu(op, {&dgate, &dup, &dh, &gate, &up});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(gate.dtype() == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, gate.describe());
    return cuda::swiglu_backward(dgate.data<float>(), dup.data<float>(), dh.data<float>(), gate.data<float>(),
                                 up.data<float>(), gate.numel());
#endif
  }
  detail::dispatch_real(gate.dtype(), [&]<class T>() {
    const T *g = gate.data<T>(), *u = up.data<T>(), *d = dh.data<T>();
    T *dg = dgate.data<T>(), *du = dup.data<T>();
    const std::int64_t n = gate.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) {
      const T sig = T(1) / (T(1) + detail::exp(-g[i]));
      const T silu = g[i] * sig;
      du[i] = d[i] * silu;
      dg[i] = d[i] * u[i] * sig * (T(1) + g[i] * (T(1) - sig));  // silu' = sig (1 + g (1 - sig))
    }
  });
}

}  // namespace moe::ops
