#include "kernels/cpu/common.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up) {
  dispatch_real(gate.dtype(), [&]<class T>() {
    const T *g = gate.data<T>(), *u = up.data<T>();
    T* o = h.data<T>();
    const std::int64_t n = gate.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) o[i] = g[i] / (T(1) + cpu::exp(-g[i])) * u[i];
  });
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up) {
  dispatch_real(gate.dtype(), [&]<class T>() {
    const T *g = gate.data<T>(), *u = up.data<T>(), *d = dh.data<T>();
    T *dg = dgate.data<T>(), *du = dup.data<T>();
    const std::int64_t n = gate.numel();
#pragma omp parallel for
    for (std::int64_t i = 0; i < n; ++i) {
      const T sig = T(1) / (T(1) + cpu::exp(-g[i]));
      const T silu = g[i] * sig;
      du[i] = d[i] * silu;
      dg[i] = d[i] * u[i] * sig * (T(1) + g[i] * (T(1) - sig));  // silu' = sig (1 + g (1 - sig))
    }
  });
}

}  // namespace moe::cpu
