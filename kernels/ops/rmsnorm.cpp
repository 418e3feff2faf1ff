#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, double eps) {
  const char* op = "rmsnorm_forward";
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 2, ShapeError, "{}: x {} must be 2-D (N,C)", op, x.describe());
  const std::int64_t N = x.size(0), C = x.size(1);
  expect_tensor(op, "w", w, t, {C});
  expect_tensor(op, "y", y, t, {N, C});
  expect_tensor(op, "rstd", rstd, t, {N});
  const auto gpu = detail::on_gpu(op, {&y, &rstd, &x, &w});
  detail::expect_f32_on_gpu(bool(gpu), op, x);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::rmsnorm_forward(y.data<float>(), rstd.data<float>(), x.data<float>(), w.data<float>(), N, C,
                                   static_cast<float>(eps));
  }
  cpu::rmsnorm_forward(y, rstd, x, w, eps);
}

void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 2, ShapeError, "{}: x {} must be 2-D (N,C)", op, x.describe());
  const std::int64_t N = x.size(0), C = x.size(1);
  expect_tensor(op, "w", w, t, {C});
  if (dw.defined()) expect_tensor(op, "dw", dw, t, {C});
  expect_tensor(op, "dy", dy, t, {N, C});
  expect_tensor(op, "rstd", rstd, t, {N});
  if (dx.defined()) expect_tensor(op, "dx", dx, t, {N, C});
  const auto gpu = detail::on_gpu(op, {&dx, &dw, &dy, &x, &w, &rstd});
  detail::expect_f32_on_gpu(bool(gpu), op, x);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::rmsnorm_backward(dx.defined() ? dx.data<float>() : nullptr,
                                    dw.defined() ? dw.data<float>() : nullptr, dy.data<float>(), x.data<float>(),
                                    w.data<float>(), rstd.data<float>(), N, C);
  }
  cpu::rmsnorm_backward(dx, dw, dy, x, w, rstd);
}

}  // namespace moe::ops
