#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void rope(Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, int layout, const Tensor& positions) {
  const std::int64_t B = x.size(0), T_ = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  dispatch_real(x.dtype(), [&]<class T>() {
    const T *cs = cos.data<T>(), *sn = sin.data<T>();
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    const std::int32_t* pos = positions.defined() ? positions.data<std::int32_t>() : nullptr;
#pragma omp parallel for collapse(2)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t p = 0; p < T_; ++p)
        for (std::int64_t h = 0; h < H; ++h) {
          const std::int64_t base = ((b * T_ + p) * H + h) * D;
          const std::int64_t row = pos ? pos[b * T_ + p] : p;  // the token's place in its document
          const T *c = cs + row * half, *s = sn + row * half;
          for (std::int64_t i = 0; i < half; ++i) {
            // Where pair i's two dims are read and written: (i, i + half), or (2i, 2i + 1).
            const std::int64_t r1 = layout == 1 ? 2 * i : i, r2 = layout == 1 ? 2 * i + 1 : i + half;
            const std::int64_t w1 = layout == 2 ? 2 * i : i, w2 = layout == 2 ? 2 * i + 1 : i + half;
            const T x1 = xp[base + r1], x2 = xp[base + r2];  // read both before writing (y may alias x)
            yp[base + w1] = x1 * c[i] - x2 * s[i];
            yp[base + w2] = x2 * c[i] + x1 * s[i];
          }
        }
  });
}

}  // namespace moe::cpu
