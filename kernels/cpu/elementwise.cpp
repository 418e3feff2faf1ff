#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void accumulate(Tensor& y, const Tensor& x, double alpha) {
  dispatch_real(y.dtype(), [&]<class T>() {
    T* yp = y.data<T>();
    const T* xp = x.data<T>();
    const T a = static_cast<T>(alpha);
    const std::int64_t n = y.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) yp[i] += a * xp[i];
  });
}

void scale(Tensor& y, double alpha) {
  dispatch_real(y.dtype(), [&]<class T>() {
    T* yp = y.data<T>();
    const std::int64_t n = y.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) yp[i] *= static_cast<T>(alpha);
  });
}

void sum_into(Tensor& total, const Tensor& x) {
  double s = total.data<double>()[0];
  const float* xp = x.data<float>();
  for (std::int64_t i = 0; i < x.numel(); ++i) s += double(xp[i]);
  total.data<double>()[0] = s;
}

double sum_squares(const Tensor& x) {
  double s = 0;
  dispatch_real(x.dtype(), [&]<class T>() {
    const T* xp = x.data<T>();
    const std::int64_t n = x.numel();
#pragma omp parallel for reduction(+ : s)
    for (std::int64_t i = 0; i < n; ++i) s += static_cast<double>(xp[i]) * static_cast<double>(xp[i]);
  });
  return s;
}

void convert_bf16(Tensor& y, const Tensor& x) {
  const std::int64_t n = x.numel();
  if (y.dtype() == DType::bf16) {
    const float* s = x.data<float>();
    bf16* d = y.data<bf16>();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) d[i] = to_bf16(s[i]);
  } else {
    const bf16* s = x.data<bf16>();
    float* d = y.data<float>();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) d[i] = from_bf16(s[i]);
  }
}

}  // namespace moe::cpu
