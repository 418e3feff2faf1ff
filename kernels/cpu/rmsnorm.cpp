#include <cmath>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

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
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, x.describe());
    return cuda::rmsnorm_forward(y.data<float>(), rstd.data<float>(), x.data<float>(), w.data<float>(), N, C,
                                 static_cast<float>(eps));
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const T *xp = x.data<T>(), *wp = w.data<T>();
    T *yp = y.data<T>(), *rp = rstd.data<T>();
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n) {
      const T* xr = xp + n * C;
      T ss = 0;  // accumulate in T: f32 rows of a few thousand stay within 1e-6 relative
      for (std::int64_t c = 0; c < C; ++c) ss += xr[c] * xr[c];
      const T r = T(1) / std::sqrt(ss / T(C) + T(eps));
      rp[n] = r;
      for (std::int64_t c = 0; c < C; ++c) yp[n * C + c] = xr[c] * r * wp[c];
    }
  });
}

void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd) {
  const char* op = "rmsnorm_backward";
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 2, ShapeError, "{}: x {} must be 2-D (N,C)", op, x.describe());
  const std::int64_t N = x.size(0), C = x.size(1);
  expect_tensor(op, "w", w, t, {C});
  expect_tensor(op, "dw", dw, t, {C});
  expect_tensor(op, "dy", dy, t, {N, C});
  expect_tensor(op, "rstd", rstd, t, {N});
  if (dx.defined()) expect_tensor(op, "dx", dx, t, {N, C});
  const auto gpu = detail::on_gpu(op, {&dx, &dw, &dy, &x, &w, &rstd});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, x.describe());
    return cuda::rmsnorm_backward(dx.defined() ? dx.data<float>() : nullptr, dw.data<float>(), dy.data<float>(),
                                  x.data<float>(), w.data<float>(), rstd.data<float>(), N, C);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const T *xp = x.data<T>(), *wp = w.data<T>(), *dyp = dy.data<T>(), *rp = rstd.data<T>();
    T* dwp = dw.data<T>();
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    // dw: serial over rows (every row adds into the same C entries).
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = 0; c < C; ++c) dwp[c] += dyp[n * C + c] * xp[n * C + c] * rp[n];
    if (!dxp) return;
      // With xh = x * r: dx = r * (dy*w - xh * mean(dy*w*xh)).
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n) {
      const T *xr = xp + n * C, *dyr = dyp + n * C;
      const T r = rp[n];
      T dot = 0;
      for (std::int64_t c = 0; c < C; ++c) dot += dyr[c] * wp[c] * xr[c] * r;
      dot /= T(C);
      for (std::int64_t c = 0; c < C; ++c) dxp[n * C + c] = r * (dyr[c] * wp[c] - xr[c] * r * dot);
    }
  });
}

}  // namespace moe::ops
