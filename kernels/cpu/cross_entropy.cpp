#include <algorithm>
#include <cmath>

#include "kernels/cpu/common.h"
#include "kernels/cpu/exp.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
namespace {
void check(const char* op, const Tensor& logits, const Tensor& targets) {
  MOE_CHECK(logits.ndim() == 2, ShapeError, "{}: logits {} must be (N,V)", op, logits.describe());
  expect_tensor(op, "targets", targets, DType::i32, {logits.size(0)});
  expect_ids(op, "target", targets, -1, logits.size(1));  // device targets: checked on the host by the caller
}
// Row softmax statistics: max and log-sum-exp, so that p_v = exp(l_v - lse).
// (omp simd: the row sums may be reassociated, so they vectorise.)
template <class T>
T log_sum_exp(const T* l, std::int64_t V) {
  T mx = l[0];
#pragma omp simd reduction(max : mx)
  for (std::int64_t v = 0; v < V; ++v) mx = std::max(mx, l[v]);
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t v = 0; v < V; ++v) sum += detail::exp(l[v] - mx);
  return mx + std::log(sum);
}
}  // namespace

void cross_entropy_forward(Tensor& losses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  DType t = detail::real_dtype(op, logits);
  check(op, logits, targets);
  const std::int64_t N = logits.size(0), V = logits.size(1);
  expect_tensor(op, "losses", losses, t, {N});
  const auto gpu = detail::on_gpu(op, {&losses, &logits, &targets});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, logits.describe());
    return cuda::cross_entropy(losses.data<float>(), nullptr, nullptr, logits.data<float>(),
                               targets.data<std::int32_t>(), N, V);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const T* lp = logits.data<T>();
    const std::int32_t* tg = targets.data<std::int32_t>();
    T* out = losses.data<T>();
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n) out[n] = tg[n] < 0 ? T(0) : log_sum_exp(lp + n * V, V) - lp[n * V + tg[n]];
  });
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_backward";
  DType t = detail::real_dtype(op, logits);
  check(op, logits, targets);
  const std::int64_t N = logits.size(0), V = logits.size(1);
  expect_tensor(op, "dlosses", dlosses, t, {N});
  expect_tensor(op, "dlogits", dlogits, t, {N, V});
  const auto gpu = detail::on_gpu(op, {&dlogits, &dlosses, &logits, &targets});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, logits.describe());
    return cuda::cross_entropy(nullptr, dlogits.data<float>(), dlosses.data<float>(), logits.data<float>(),
                               targets.data<std::int32_t>(), N, V);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
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
      for (std::int64_t v = 0; v < V; ++v) dr[v] = detail::exp(l[v] - lse) * scale;
      dr[tg[n]] -= dl[n];
    }
  });
}

}  // namespace moe::ops
