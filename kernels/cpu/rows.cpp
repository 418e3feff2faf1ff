// Row movement: gather, fixed-width weighted row sums and row-pair dot products
// (kernels/ops.h). Built with -ffp-contract=off: the sums' order is the GPU's, term by term.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void gather_rows(Tensor& out, const Tensor& in, const Tensor& src) {
  const std::int64_t R = src.numel();
  const std::size_t bytes = dtype_size(in.dtype()) * static_cast<std::size_t>(in.size(1));
  const std::int32_t* s = src.data<std::int32_t>();
  const auto* from = static_cast<const char*>(in.raw());
  auto* to = static_cast<char*>(out.raw());
#pragma omp parallel for
  for (std::int64_t r = 0; r < R; ++r) {
    char* d = to + std::size_t(r) * bytes;
    if (s[r] < 0) std::memset(d, 0, bytes);
    else std::memcpy(d, from + std::size_t(s[r]) * bytes, bytes);
  }
}

void combine_rows(Tensor& out, const Tensor& in, const Tensor& slots, const Tensor& weights, bool accumulate) {
  const std::int64_t M = slots.size(0), W = slots.size(1), C = in.size(1);
  dispatch_real(in.dtype(), [&]<class T>() {
    const T* x = in.data<T>();
    const T* w = weights.defined() ? weights.data<T>() : nullptr;
    const std::int32_t* s = slots.data<std::int32_t>();
    T* y = out.data<T>();
#pragma omp parallel for
    for (std::int64_t m = 0; m < M; ++m) {
      T* ym = y + m * C;
      bool first = !accumulate;
      for (std::int64_t j = m * W; j < (m + 1) * W; ++j) {
        if (s[j] < 0) continue;
        const T* xr = x + s[j] * C;
        for (std::int64_t c = 0; c < C; ++c) {
          const T term = w ? w[j] * xr[c] : xr[c];
          ym[c] = first ? term : ym[c] + term;
        }
        first = false;
      }
      if (first) std::fill_n(ym, C, T(0));
    }
  });
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& a_rows, const Tensor& b, const Tensor& b_rows) {
  const std::int64_t J = a_rows.numel(), C = a.size(1);
  dispatch_real(a.dtype(), [&]<class T>() {
    const T *x = a.data<T>(), *y = b.data<T>();
    const std::int32_t* ar = a_rows.data<std::int32_t>();
    const std::int32_t* br = b_rows.defined() ? b_rows.data<std::int32_t>() : nullptr;
    T* o = out.data<T>();
#pragma omp parallel for
    for (std::int64_t j = 0; j < J; ++j) {
      const T *xa = x + ar[j] * C, *yb = y + (br ? br[j] : j) * C;
      double dot = 0;
      for (std::int64_t c = 0; c < C; ++c) dot += double(xa[c]) * double(yb[c]);
      o[j] = static_cast<T>(dot);
    }
  });
}

}  // namespace moe::cpu
