#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) {
  const std::int64_t N = tokens.size(0), C = table.size(1);
  dispatch_real(table.dtype(), [&]<class T>() {
    const std::int32_t* tok = tokens.data<std::int32_t>();
    const T* w = table.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = 0; c < C; ++c) o[n * C + c] = tok[n] < 0 ? T(0) : w[tok[n] * C + c];
  });
}

void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  const std::int64_t N = tokens.size(0), C = dtable.size(1);
  dispatch_real(dtable.dtype(), [&]<class T>() {
    const std::int32_t* tok = tokens.data<std::int32_t>();
    const T* d = dout.data<T>();
    T* dw = dtable.data<T>();
    // Serial over rows: two rows with the same token add into the same table row.
    for (std::int64_t n = 0; n < N; ++n)
      if (tok[n] >= 0)
        for (std::int64_t c = 0; c < C; ++c) dw[tok[n] * C + c] += d[n * C + c];
  });
}

}  // namespace moe::cpu
