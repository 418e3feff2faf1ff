// Causal multi-head attention with grouped KV heads: O(T^2) per head, materialising the
// probabilities (the reference; a fused, tiled kernel is the GPU's job).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/exp.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {
namespace {
struct Dims {
  std::int64_t B, T, H, Hkv, D;
};
Dims dims(const Tensor& q, const Tensor& k) { return {q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)}; }
// The first key query i of sequence b sees: its document's first token, or 0.
std::int64_t first_key(const std::int32_t* pos, std::int64_t b, std::int64_t T, std::int64_t i) {
  return pos ? i - pos[b * T + i] : 0;
}
}  // namespace

void attention_forward(Tensor& out, Tensor& probs, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& positions) {
  const Dims d = dims(q, k);
  dispatch_real(q.dtype(), [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv, ldq = H * D, ldk = Hkv * D;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>();
    T *op_ = out.data<T>(), *pp = probs.data<T>(), *lp = lse.defined() ? lse.data<T>() : nullptr;
    const std::int32_t* pos = positions.defined() ? positions.data<std::int32_t>() : nullptr;
    // Per (sequence, head): S = Q K^T (GEMM on the strided head slices), masked row softmax
    // in place, O = P V. The masked scores (above the diagonal, before the document) are
    // computed and then zeroed.
#pragma omp parallel for collapse(2)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        const T* Q = qp + b * T_ * ldq + h * D;
        const T* K = kp + b * T_ * ldk + (h / rep) * D;
        const T* V = vp + b * T_ * ldk + (h / rep) * D;
        T* P = pp + (b * H + h) * T_ * T_;
        cpu::gemm<T>(false, true, T_, T_, D, Q, ldq, K, ldk, T(0), P, T_);
        for (std::int64_t i = 0; i < T_; ++i) {
          T* p = P + i * T_;
          const std::int64_t j0 = first_key(pos, b, T_, i);
          T mx = -INFINITY;
#pragma omp simd reduction(max : mx)
          for (std::int64_t j = j0; j <= i; ++j) mx = std::max(mx, p[j] *= scale);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (std::int64_t j = j0; j <= i; ++j) sum += (p[j] = cpu::exp(p[j] - mx));
          const T inv = T(1) / sum;
          for (std::int64_t j = j0; j <= i; ++j) p[j] *= inv;
          if (lp) lp[(b * H + h) * T_ + i] = mx + std::log(sum);
          std::fill(p, p + j0, T(0));
          std::fill(p + i + 1, p + T_, T(0));
        }
        cpu::gemm<T>(false, false, T_, D, T_, P, T_, V, ldk, T(0), op_ + b * T_ * ldq + h * D, ldq);
      }
  });
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& probs) {
  const Dims d = dims(q, k);
  dispatch_real(q.dtype(), [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv, ldq = H * D, ldk = Hkv * D;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>(), *pp = probs.data<T>(), *dop = dout.data<T>();
    T *dqp = dq.data<T>(), *dkp = dk.data<T>(), *dvp = dv.data<T>();
    // Parallel over sequences only: the heads of one sequence add into shared dk/dv rows.
#pragma omp parallel
    {
      std::vector<T> dS(static_cast<std::size_t>(T_ * T_));
#pragma omp for
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t h = 0; h < H; ++h) {
          const std::int64_t qo = b * T_ * ldq + h * D, ko = b * T_ * ldk + (h / rep) * D;
          const T* P = pp + (b * H + h) * T_ * T_;
          T* ds = dS.data();
          cpu::gemm<T>(false, true, T_, T_, D, dop + qo, ldq, vp + ko, ldk, T(0), ds, T_);  // dP = dO V^T
          cpu::gemm<T>(true, false, T_, D, T_, P, T_, dop + qo, ldq, T(1), dvp + ko, ldk);  // dV += P^T dO
          for (std::int64_t i = 0; i < T_; ++i) {  // softmax backward: dS = P (dP - sum_j P dP) * scale
            const T* p = P + i * T_;
            T* r = ds + i * T_;
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (std::int64_t j = 0; j <= i; ++j) dot += p[j] * r[j];
            for (std::int64_t j = 0; j <= i; ++j) r[j] = p[j] * (r[j] - dot) * scale;
            std::fill(r + i + 1, r + T_, T(0));
          }
          cpu::gemm<T>(false, false, T_, D, T_, ds, T_, kp + ko, ldk, T(0), dqp + qo, ldq);  // dQ = dS K
          cpu::gemm<T>(true, false, T_, D, T_, ds, T_, qp + qo, ldq, T(1), dkp + ko, ldk);   // dK += dS^T Q
        }
    }
  });
}

void attention_cached(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v) {
  const std::int64_t B = q.size(0), N = q.size(1), H = q.size(2), D = q.size(3), S = k.size(1), Hkv = k.size(2);
  dispatch_real(q.dtype(), [&]<class T>() {
    const std::int64_t rep = H / Hkv, ldq = H * D, ldk = Hkv * D, past = S - N;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>();
    T* op_ = out.data<T>();
#pragma omp parallel
    {
      std::vector<T> scores(static_cast<std::size_t>(N * S));
#pragma omp for collapse(2)
      for (std::int64_t b = 0; b < B; ++b)
        for (std::int64_t h = 0; h < H; ++h) {
          const T* K = kp + b * S * ldk + (h / rep) * D;
          T* P = scores.data();
          cpu::gemm<T>(false, true, N, S, D, qp + b * N * ldq + h * D, ldq, K, ldk, T(0), P, S);
          for (std::int64_t i = 0; i < N; ++i) {  // query i sees keys 0 .. past + i
            T* p = P + i * S;
            const std::int64_t last = past + i;
            T mx = -INFINITY;
            for (std::int64_t j = 0; j <= last; ++j) mx = std::max(mx, p[j] *= scale);
            T sum = 0;
            for (std::int64_t j = 0; j <= last; ++j) sum += (p[j] = cpu::exp(p[j] - mx));
            for (std::int64_t j = 0; j <= last; ++j) p[j] /= sum;
            std::fill(p + last + 1, p + S, T(0));
          }
          cpu::gemm<T>(false, false, N, D, S, P, S, vp + b * S * ldk + (h / rep) * D, ldk, T(0),
                       op_ + b * N * ldq + h * D, ldq);
        }
    }
  });
}

void recompute_probs(Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& lse, const Tensor& positions) {
  const Dims d = dims(q, k);
  dispatch_real(q.dtype(), [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv, ldq = H * D, ldk = Hkv * D;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *lp = lse.data<T>();
    T* pp = probs.data<T>();
    const std::int32_t* pos = positions.defined() ? positions.data<std::int32_t>() : nullptr;
#pragma omp parallel for collapse(2)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        T* P = pp + (b * H + h) * T_ * T_;
        cpu::gemm<T>(false, true, T_, T_, D, qp + b * T_ * ldq + h * D, ldq, kp + b * T_ * ldk + (h / rep) * D, ldk,
                     T(0), P, T_);
        for (std::int64_t i = 0; i < T_; ++i) {
          T* p = P + i * T_;
          const T l = lp[(b * H + h) * T_ + i];
          const std::int64_t j0 = first_key(pos, b, T_, i);
          for (std::int64_t j = j0; j <= i; ++j) p[j] = cpu::exp(p[j] * scale - l);
          std::fill(p, p + j0, T(0));
          std::fill(p + i + 1, p + T_, T(0));
        }
      }
  });
}

}  // namespace moe::cpu
