#include <fmt/format.h>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {

void accumulate(Tensor& y, const Tensor& x, double alpha) {
  const char* op = "accumulate";
  DType t = detail::real_dtype(op, y);
  expect_tensor(op, "x", x, t, y.shape());
  const auto gpu = detail::on_gpu(op, {&y, &x});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, y.describe());
    return cuda::accumulate(y.data<float>(), x.data<float>(), static_cast<float>(alpha), y.numel());
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    T* yp = y.data<T>();
    const T* xp = x.data<T>();
    const T a = static_cast<T>(alpha);
    const std::int64_t n = y.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) yp[i] += a * xp[i];
  });
}

void scale(Tensor& y, double alpha) {
  DType t = detail::real_dtype("scale", y);
  const auto gpu = detail::on_gpu("scale", {&y});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "scale: the CUDA kernel takes f32, got {}", y.describe());
    return cuda::scale(y.data<float>(), static_cast<float>(alpha), y.numel());
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    T* yp = y.data<T>();
    const std::int64_t n = y.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) yp[i] *= static_cast<T>(alpha);
  });
}

void sum_into(Tensor& total, const Tensor& x) {
  const char* op = "sum_into";
  expect_tensor(op, "total", total, DType::f64, {1});
  MOE_CHECK(x.defined() && x.dtype() == DType::f32, ShapeError, "{}: x {} must be f32", op, x.describe());
  const auto gpu = detail::on_gpu(op, {&total, &x});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::sum_into(total.data<double>(), x.data<float>(), x.numel());
#endif
  }
  double s = total.data<double>()[0];
  const float* xp = x.data<float>();
  for (std::int64_t i = 0; i < x.numel(); ++i) s += double(xp[i]);
  total.data<double>()[0] = s;
}

double sum_squares(const Tensor& x) {
  DType t = detail::real_dtype("sum_squares", x);
  const auto gpu = detail::on_gpu("sum_squares", {&x});
  // The sum comes back to the host: on a device a copy (and a wait), counted as one.
  if (!host_readable(x.device())) moe::detail::count_copy(true, sizeof(double));
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "sum_squares: the CUDA kernel takes f32, got {}", x.describe());
    return cuda::sum_squares(x.data<float>(), x.numel());
#endif
  }
  double s = 0;
  detail::dispatch_real(t, [&]<class T>() {
    const T* xp = x.data<T>();
    const std::int64_t n = x.numel();
#pragma omp parallel for reduction(+ : s)
    for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(xp[i]) * static_cast<double>(xp[i]);
  });
  return s;
}

void convert(Tensor& y, const Tensor& x) {
  const char* op = "convert";
  MOE_CHECK(x.defined() && y.defined() && x.shape() == y.shape(), ShapeError, "{}: x {} and y {} must share a shape",
            op, x.describe(), y.describe());
  const auto gpu = detail::on_gpu(op, {&y, &x});
  const std::int64_t n = x.numel();
  if (gpu && ((x.dtype() == DType::f32 && y.dtype() == DType::bf16) ||
              (x.dtype() == DType::bf16 && y.dtype() == DType::f32))) {
#ifdef MOE_WITH_CUDA
    return cuda::convert_bf16(y.raw(), x.raw(), n, y.dtype() == DType::bf16);
#endif
  }
  if (x.dtype() == DType::f32 && y.dtype() == DType::bf16) {
    const float* s = x.data<float>();
    bf16* d = y.data<bf16>();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) d[i] = to_bf16(s[i]);
  } else if (x.dtype() == DType::bf16 && y.dtype() == DType::f32) {
    const bf16* s = x.data<bf16>();
    float* d = y.data<float>();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) d[i] = from_bf16(s[i]);
  } else {
    throw ShapeError(
        fmt::format("{}: {} -> {} is not a conversion this op makes (f32 <-> bf16)", op, x.describe(), y.describe()));
  }
}

}  // namespace moe::ops
