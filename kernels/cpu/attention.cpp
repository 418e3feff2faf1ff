// Causal multi-head attention with grouped KV heads; the plain O(T^2) reference.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"

namespace moe::ops {
namespace {
struct Dims {
  std::int64_t B, T, H, Hkv, D;
};
Dims check(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& probs, DType t) {
  MOE_CHECK(q.ndim() == 4 && k.ndim() == 4, ShapeError, "{}: q {} and k {} must be (B,T,H,D)", op, q.describe(),
            k.describe());
  Dims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
  MOE_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, ShapeError, "{}: heads {} not a multiple of kv heads {}", op, d.H, d.Hkv);
  expect_tensor(op, "k", k, t, {d.B, d.T, d.Hkv, d.D});
  expect_tensor(op, "v", v, t, {d.B, d.T, d.Hkv, d.D});
  expect_tensor(op, "probs", probs, t, {d.B, d.H, d.T, d.T});
  return d;
}
}  // namespace

void attention_forward(Tensor& out, Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& v) {
  const char* op = "attention_forward";
  DType t = detail::real_dtype(op, q);
  const Dims d = check(op, q, k, v, probs, t);
  expect_tensor(op, "out", out, t, q.shape());
  detail::expect_cpu(op, {&out, &probs, &q, &k, &v});
  detail::dispatch_real(t, [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>();
    T *op_ = out.data<T>(), *pp = probs.data<T>();
#pragma omp parallel for collapse(3)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < T_; ++i) {
          const T* qi = qp + ((b * T_ + i) * H + h) * D;
          T* p = pp + ((b * H + h) * T_ + i) * T_;
          T mx = -INFINITY;
          for (std::int64_t j = 0; j <= i; ++j) {
            const T* kj = kp + ((b * T_ + j) * Hkv + h / rep) * D;
            T s = 0;
            for (std::int64_t c = 0; c < D; ++c) s += qi[c] * kj[c];
            p[j] = s * scale;
            mx = std::max(mx, p[j]);
          }
          T sum = 0;
          for (std::int64_t j = 0; j <= i; ++j) sum += (p[j] = std::exp(p[j] - mx));
          for (std::int64_t j = 0; j <= i; ++j) p[j] /= sum;
          std::fill(p + i + 1, p + T_, T(0));
          T* oi = op_ + ((b * T_ + i) * H + h) * D;
          std::fill(oi, oi + D, T(0));
          for (std::int64_t j = 0; j <= i; ++j) {
            const T* vj = vp + ((b * T_ + j) * Hkv + h / rep) * D;
            for (std::int64_t c = 0; c < D; ++c) oi[c] += p[j] * vj[c];
          }
        }
  });
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                        const Tensor& k, const Tensor& v, const Tensor& probs) {
  const char* op = "attention_backward";
  DType t = detail::real_dtype(op, q);
  const Dims d = check(op, q, k, v, probs, t);
  expect_tensor(op, "dout", dout, t, q.shape());
  expect_tensor(op, "dq", dq, t, q.shape());
  expect_tensor(op, "dk", dk, t, k.shape());
  expect_tensor(op, "dv", dv, t, v.shape());
  detail::expect_cpu(op, {&dq, &dk, &dv, &dout, &q, &k, &v, &probs});
  dk.zero();  // dk, dv gather from every query head of their group: zero, then add
  dv.zero();
  detail::dispatch_real(t, [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>(), *pp = probs.data<T>(),
            *dop = dout.data<T>();
    T *dqp = dq.data<T>(), *dkp = dk.data<T>(), *dvp = dv.data<T>();
    // Parallel over sequences only: heads of one sequence add into shared dk/dv rows.
#pragma omp parallel
    {
      std::vector<T> dp(static_cast<std::size_t>(T_));
#pragma omp for
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t h = 0; h < H; ++h)
          for (std::int64_t i = 0; i < T_; ++i) {
            const T* p = pp + ((b * H + h) * T_ + i) * T_;
            const T* doi = dop + ((b * T_ + i) * H + h) * D;
            const T* qi = qp + ((b * T_ + i) * H + h) * D;
            T* dqi = dqp + ((b * T_ + i) * H + h) * D;
            T dot = 0;  // sum_j p_j dp_j
            for (std::int64_t j = 0; j <= i; ++j) {
              const std::int64_t kv = ((b * T_ + j) * Hkv + h / rep) * D;
              T s = 0;
              for (std::int64_t c = 0; c < D; ++c) {
                s += doi[c] * vp[kv + c];
                dvp[kv + c] += p[j] * doi[c];
              }
              dp[static_cast<std::size_t>(j)] = s;
              dot += p[j] * s;
            }
            std::fill(dqi, dqi + D, T(0));
            for (std::int64_t j = 0; j <= i; ++j) {
              const std::int64_t kv = ((b * T_ + j) * Hkv + h / rep) * D;
              const T ds = p[j] * (dp[static_cast<std::size_t>(j)] - dot) * scale;  // softmax backward
              for (std::int64_t c = 0; c < D; ++c) {
                dqi[c] += ds * kp[kv + c];
                dkp[kv + c] += ds * qi[c];
              }
            }
          }
    }
  });
}

}  // namespace moe::ops
