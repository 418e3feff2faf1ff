#include <algorithm>
#include <cmath>

#include "kernels/cpu/common.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {
namespace {
// Row softmax statistics: max and log-sum-exp, so that p_v = exp(l_v - lse).
// (omp simd: the row sums may be reassociated, so they vectorise.)
template <class T>
T log_sum_exp(const T* l, std::int64_t V) {
  T mx = l[0];
#pragma omp simd reduction(max : mx)
  for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, l[v]);
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t v = 0; v < V; ++v) sum += cpu::exp(l[v] - mx);
  return mx + std::log(sum);
}
}  // namespace

void cross_entropy_forward(Tensor& losses, const Tensor& logits, const Tensor& targets) {
  const std::int64_t N = logits.size(0), V = logits.size(1);
  dispatch_real(logits.dtype(), [&]<class T>() {
    const T* lp = logits.data<T>();
    const std::int32_t* tg = targets.data<std::int32_t>();
    T* out = losses.data<T>();
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n) out[n] = tg[n] < 0 ? T(0) : log_sum_exp(lp + n * V, V) - lp[n * V + tg[n]];
  });
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& targets) {
  const std::int64_t N = logits.size(0), V = logits.size(1);
  dispatch_real(logits.dtype(), [&]<class T>() {
    const T *lp = logits.data<T>(), *dl = dlosses.data<T>();
    const std::int32_t* tg = targets.data<std::int32_t>();
    T* d = dlogits.data<T>();
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n) {
      T* dr = d + n * V;
      if (tg[n] < 0) {
        std::fill(dr, dr + V, T(0));
        continue;
      }
      const T* l = lp + n * V;
      const T lse = log_sum_exp(l, V);
      const T scale = dl[n];
#pragma omp simd
      for (std::int64_t v = 0; v < V; ++v) dr[v] = cpu::exp(l[v] - lse) * scale;
      dr[tg[n]] -= dl[n];
    }
  });
}

}  // namespace moe::cpu
