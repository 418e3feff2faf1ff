#include <fmt/format.h>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {

void accumulate(Tensor& y, const Tensor& x, double alpha) {
  const char* op = "accumulate";
  DType t = detail::real_dtype(op, y);
  expect_tensor(op, "x", x, t, y.shape());
  const auto gpu = detail::on_gpu(op, {&y, &x});
  detail::expect_f32_on_gpu(bool(gpu), op, y);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::accumulate(y.data<float>(), x.data<float>(), static_cast<float>(alpha), y.numel());
  }
  cpu::accumulate(y, x, alpha);
}

void scale(Tensor& y, double alpha) {
  const char* op = "scale";
  detail::real_dtype(op, y);
  const auto gpu = detail::on_gpu(op, {&y});
  detail::expect_f32_on_gpu(bool(gpu), op, y);
  if (gpu) {
    if constexpr (detail::kCudaBuilt) return cuda::scale(y.data<float>(), static_cast<float>(alpha), y.numel());
  }
  cpu::scale(y, alpha);
}

void sum_into(Tensor& total, const Tensor& x) {
  const char* op = "sum_into";
  expect_tensor(op, "total", total, DType::f64, {1});
  MOE_CHECK(x.defined() && x.dtype() == DType::f32, ShapeError, "{}: x {} must be f32", op, x.describe());
  const auto gpu = detail::on_gpu(op, {&total, &x});
  if (gpu) {
    if constexpr (detail::kCudaBuilt) return cuda::sum_into(total.data<double>(), x.data<float>(), x.numel());
  }
  cpu::sum_into(total, x);
}

double sum_squares(const Tensor& x) {
  const char* op = "sum_squares";
  detail::real_dtype(op, x);
  const auto gpu = detail::on_gpu(op, {&x});
  detail::expect_f32_on_gpu(bool(gpu), op, x);
  // The sum comes back to the host: on a device a copy (and a wait), counted as one.
  if (!host_readable(x.device())) moe::detail::count_copy(true, sizeof(double));
  if (gpu) {
    if constexpr (detail::kCudaBuilt) return cuda::sum_squares(x.data<float>(), x.numel());
  }
  return cpu::sum_squares(x);
}

void convert(Tensor& y, const Tensor& x) {
  const char* op = "convert";
  MOE_CHECK(x.defined() && y.defined() && x.shape() == y.shape(), ShapeError, "{}: x {} and y {} must share a shape",
            op, x.describe(), y.describe());
  const bool to_bf16 = x.dtype() == DType::f32 && y.dtype() == DType::bf16;
  MOE_CHECK(to_bf16 || (x.dtype() == DType::bf16 && y.dtype() == DType::f32), ShapeError,
            "{}: {} -> {} is not a conversion this op makes (f32 <-> bf16)", op, x.describe(), y.describe());
  const auto gpu = detail::on_gpu(op, {&y, &x});
  if (gpu) {
    if constexpr (detail::kCudaBuilt) return cuda::convert_bf16(y.raw(), x.raw(), x.numel(), to_bf16);
  }
  cpu::convert_bf16(y, x);
}

}  // namespace moe::ops
