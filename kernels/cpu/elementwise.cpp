#include <fmt/format.h>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"

namespace moe::ops {

void accumulate(Tensor& y, const Tensor& x, double alpha) {
  const char* op = "accumulate";
  DType t = detail::real_dtype(op, y);
  expect_tensor(op, "x", x, t, y.shape());
  detail::expect_cpu(op, {&y, &x});
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
  detail::expect_cpu("scale", {&y});
  detail::dispatch_real(t, [&]<class T>() {
    T* yp = y.data<T>();
    const std::int64_t n = y.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) yp[i] *= static_cast<T>(alpha);
  });
}

double sum_squares(const Tensor& x) {
  DType t = detail::real_dtype("sum_squares", x);
  detail::expect_cpu("sum_squares", {&x});
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
  MOE_CHECK(x.defined() && y.defined() && x.shape() == y.shape(), ShapeError, "{}: x {} and y {} must share a shape", op,
            x.describe(), y.describe());
  detail::expect_cpu(op, {&y, &x});
  const std::int64_t n = x.numel();
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
    throw ShapeError(fmt::format("{}: {} -> {} is not a conversion this op makes (f32 <-> bf16)", op, x.describe(),
                                 y.describe()));
  }
}

}  // namespace moe::ops
