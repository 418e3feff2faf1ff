#include <cmath>

#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, double eps) {
  const std::int64_t N = x.size(0), C = x.size(1);
  dispatch_real(x.dtype(), [&]<class T>() {
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
  const std::int64_t N = x.size(0), C = x.size(1);
  dispatch_real(x.dtype(), [&]<class T>() {
    const T *xp = x.data<T>(), *wp = w.data<T>(), *dyp = dy.data<T>(), *rp = rstd.data<T>();
    T* dwp = dw.defined() ? dw.data<T>() : nullptr;
    T* dxp = dx.defined() ? dx.data<T>() : nullptr;
    // dw: serial over rows (every row adds into the same C entries).
    for (std::int64_t n = 0; dwp && n < N; ++n)
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

}  // namespace moe::cpu
