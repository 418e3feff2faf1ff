// Causal multi-head attention with grouped KV heads: O(T^2) per head, materialising the
// probabilities (the reference; a fused, tiled kernel is the GPU's job).
#include <algorithm>
#include <cmath>

#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"
#include "kernels/cpu/exp.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
namespace {
struct Dims {
  std::int64_t B, T, H, Hkv, D;
};
// probs: null where the op keeps none (the fused form).
Dims check(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor* probs, DType t) {
  MOE_CHECK(q.ndim() == 4 && k.ndim() == 4, ShapeError, "{}: q {} and k {} must be (B,T,H,D)", op, q.describe(),
            k.describe());
  Dims d{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3)};
  MOE_CHECK(d.Hkv > 0 && d.H % d.Hkv == 0, ShapeError, "{}: heads {} not a multiple of kv heads {}", op, d.H, d.Hkv);
  expect_tensor(op, "k", k, t, {d.B, d.T, d.Hkv, d.D});
  expect_tensor(op, "v", v, t, {d.B, d.T, d.Hkv, d.D});
  if (probs) expect_tensor(op, "probs", *probs, t, {d.B, d.H, d.T, d.T});
  return d;
}

#ifdef MOE_WITH_CUDA
// The GPU fallback (f32): the CPU's algorithm with its loops over (sequence, head) issuing
// cuBLASLt GEMMs on the strided head slices, and one masked-softmax kernel over all rows.
// f(offset of the head in q/out, offset of its kv head in k/v, offset of its probs block).
template <class F>
void for_each_head(const Dims& d, F&& f) {
  const std::int64_t rep = d.H / d.Hkv;
  for (std::int64_t b = 0; b < d.B; ++b)
    for (std::int64_t h = 0; h < d.H; ++h)
      f(b * d.T * d.H * d.D + h * d.D, b * d.T * d.Hkv * d.D + (h / rep) * d.D, (b * d.H + h) * d.T * d.T);
}

void attention_forward_gpu(const Dims& d, float* out, float* probs, const float* q, const float* k, const float* v) {
  const std::int64_t T = d.T, D = d.D, ldq = d.H * D, ldk = d.Hkv * D;
  for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
    detail::device_gemm(true, false, true, T, T, D, q + qo, ldq, k + ko, ldk, 0.f, probs + po, T);  // S = Q K^T
  });
  cuda::causal_softmax(probs, d.B * d.H * T, T, 1.0f / std::sqrt(float(D)));
  for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
    detail::device_gemm(true, false, false, T, D, T, probs + po, T, v + ko, ldk, 0.f, out + qo, ldq);  // O = P V
  });
}

void attention_backward_gpu(const Dims& d, float* dq, float* dk, float* dv, const float* dout, const float* q,
                            const float* k, const float* v, const float* probs) {
  const std::int64_t T = d.T, D = d.D, ldq = d.H * D, ldk = d.Hkv * D;
  Tensor dS = Tensor::empty({d.B, d.H, T, T}, DType::f32, Device::cuda);
  float* ds = dS.data<float>();
  for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
    detail::device_gemm(true, false, true, T, T, D, dout + qo, ldq, v + ko, ldk, 0.f, ds + po, T);      // dP = dO V^T
    detail::device_gemm(true, true, false, T, D, T, probs + po, T, dout + qo, ldq, 1.f, dv + ko, ldk);  // dV += P^T dO
  });
  cuda::causal_softmax_backward(ds, probs, d.B * d.H * T, T, 1.0f / std::sqrt(float(D)));
  for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
    detail::device_gemm(true, false, false, T, D, T, ds + po, T, k + ko, ldk, 0.f, dq + qo, ldq);  // dQ = dS K
    detail::device_gemm(true, true, false, T, D, T, ds + po, T, q + qo, ldq, 1.f, dk + ko, ldk);   // dK += dS^T Q
  });
}
#endif
}  // namespace

namespace {
// attention_forward on the CPU, also writing each row's log-sum-exp of the scaled scores
// when lse is defined.
void forward_cpu(Tensor& out, Tensor& probs, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                 const Dims& d, DType t);
}  // namespace

void attention_forward(Tensor& out, Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& v) {
  const char* op = "attention_forward";
  DType t = detail::real_dtype(op, q);
  const Dims d = check(op, q, k, v, &probs, t);
  expect_tensor(op, "out", out, t, q.shape());
  const auto gpu = detail::on_gpu(op, {&out, &probs, &q, &k, &v});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA path takes f32, got {}", op, q.describe());
    return attention_forward_gpu(d, out.data<float>(), probs.data<float>(), q.data<float>(), k.data<float>(),
                                 v.data<float>());
#endif
  }
  Tensor no_lse;
  forward_cpu(out, probs, no_lse, q, k, v, d, t);
}

namespace {
void forward_cpu(Tensor& out, Tensor& probs, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                 const Dims& d, DType t) {
  detail::dispatch_real(t, [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv, ldq = H * D, ldk = Hkv * D;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *vp = v.data<T>();
    T *op_ = out.data<T>(), *pp = probs.data<T>(), *lp = lse.defined() ? lse.data<T>() : nullptr;
    // Per (sequence, head): S = Q K^T (GEMM on the strided head slices), masked row softmax
    // in place, O = P V. The masked upper triangle is computed and then zeroed.
#pragma omp parallel for collapse(2)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        const T* Q = qp + b * T_ * ldq + h * D;
        const T* K = kp + b * T_ * ldk + (h / rep) * D;
        const T* V = vp + b * T_ * ldk + (h / rep) * D;
        T* P = pp + (b * H + h) * T_ * T_;
        detail::gemm<T>(false, true, T_, T_, D, Q, ldq, K, ldk, T(0), P, T_);
        for (std::int64_t i = 0; i < T_; ++i) {
          T* p = P + i * T_;
          T mx = -INFINITY;
#pragma omp simd reduction(max : mx)
          for (std::int64_t j = 0; j <= i; ++j) mx = std::max(mx, p[j] *= scale);
          T sum = 0;
#pragma omp simd reduction(+ : sum)
          for (std::int64_t j = 0; j <= i; ++j) sum += (p[j] = detail::exp(p[j] - mx));
          const T inv = T(1) / sum;
          for (std::int64_t j = 0; j <= i; ++j) p[j] *= inv;
          if (lp) lp[(b * H + h) * T_ + i] = mx + std::log(sum);
          std::fill(p + i + 1, p + T_, T(0));
        }
        detail::gemm<T>(false, false, T_, D, T_, P, T_, V, ldk, T(0), op_ + b * T_ * ldq + h * D, ldq);
      }
  });
}
}  // namespace

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& probs) {
  const char* op = "attention_backward";
  DType t = detail::real_dtype(op, q);
  const Dims d = check(op, q, k, v, &probs, t);
  expect_tensor(op, "dout", dout, t, q.shape());
  expect_tensor(op, "dq", dq, t, q.shape());
  expect_tensor(op, "dk", dk, t, k.shape());
  expect_tensor(op, "dv", dv, t, v.shape());
  const auto gpu = detail::on_gpu(op, {&dq, &dk, &dv, &dout, &q, &k, &v, &probs});
  dk.zero();  // dk, dv gather from every query head of their group: zero, then add
  dv.zero();
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA path takes f32, got {}", op, q.describe());
    return attention_backward_gpu(d, dq.data<float>(), dk.data<float>(), dv.data<float>(), dout.data<float>(),
                                  q.data<float>(), k.data<float>(), v.data<float>(), probs.data<float>());
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
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
          detail::gemm<T>(false, true, T_, T_, D, dop + qo, ldq, vp + ko, ldk, T(0), ds, T_);  // dP = dO V^T
          detail::gemm<T>(true, false, T_, D, T_, P, T_, dop + qo, ldq, T(1), dvp + ko, ldk);  // dV += P^T dO
          for (std::int64_t i = 0; i < T_; ++i) {  // softmax backward: dS = P (dP - sum_j P dP) * scale
            const T* p = P + i * T_;
            T* r = ds + i * T_;
            T dot = 0;
#pragma omp simd reduction(+ : dot)
            for (std::int64_t j = 0; j <= i; ++j) dot += p[j] * r[j];
            for (std::int64_t j = 0; j <= i; ++j) r[j] = p[j] * (r[j] - dot) * scale;
            std::fill(r + i + 1, r + T_, T(0));
          }
          detail::gemm<T>(false, false, T_, D, T_, ds, T_, kp + ko, ldk, T(0), dqp + qo, ldq);  // dQ = dS K
          detail::gemm<T>(true, false, T_, D, T_, ds, T_, qp + qo, ldq, T(1), dkp + ko, ldk);   // dK += dS^T Q
        }
    }
  });
}

}  // namespace moe::ops

// ---- The fused (log-sum-exp) form ------------------------------------------------------
namespace moe::ops {
namespace {
// probs (B,H,T,T) rebuilt from q, k and lse: p = exp(scale q.k - lse) on and below the
// diagonal, 0 above (the forward's softmax, up to rounding).
void recompute_probs(Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& lse, const Dims& d, DType t) {
  detail::dispatch_real(t, [&]<class T>() {
    const auto [B, T_, H, Hkv, D] = d;
    const std::int64_t rep = H / Hkv, ldq = H * D, ldk = Hkv * D;
    const T scale = T(1) / std::sqrt(T(D));
    const T *qp = q.data<T>(), *kp = k.data<T>(), *lp = lse.data<T>();
    T* pp = probs.data<T>();
#pragma omp parallel for collapse(2)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        T* P = pp + (b * H + h) * T_ * T_;
        detail::gemm<T>(false, true, T_, T_, D, qp + b * T_ * ldq + h * D, ldq, kp + b * T_ * ldk + (h / rep) * D, ldk,
                        T(0), P, T_);
        for (std::int64_t i = 0; i < T_; ++i) {
          T* p = P + i * T_;
          const T l = lp[(b * H + h) * T_ + i];
          for (std::int64_t j = 0; j <= i; ++j) p[j] = detail::exp(p[j] * scale - l);
          std::fill(p + i + 1, p + T_, T(0));
        }
      }
  });
}
Tensor scratch_probs(const Tensor& q) {
  return Tensor::empty({q.size(0), q.size(2), q.size(1), q.size(1)}, q.dtype(), q.device());
}
}  // namespace

bool fused_attention_on_gpu() {
#ifdef MOE_WITH_CUDNN
  return true;
#else
  return false;
#endif
}

void attention_lse_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v) {
  const char* op = "attention_lse_forward";
  const DType t = detail::real_dtype(op, q);
  MOE_CHECK(q.ndim() == 4, ShapeError, "{}: q {} must be (B,T,H,D)", op, q.describe());
  const Dims d = check(op, q, k, v, nullptr, t);
  expect_tensor(op, "out", out, t, q.shape());
  expect_tensor(op, "lse", lse, t, {d.B, d.H, d.T});
  const auto gpu = detail::on_gpu(op, {&out, &lse, &q, &k, &v});
  if (gpu) {
    MOE_CHECK(fused_attention_on_gpu(), DeviceError,
              "{}: this build has no cuDNN fused attention (use attention_forward)", op);
#ifdef MOE_WITH_CUDNN
    return cuda::sdpa_forward(out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(),
                              d.B, d.T, d.H, d.Hkv, d.D);
#endif
  }
  Tensor probs = scratch_probs(q);  // the CPU's softmax, on q's device (the sim device's too)
  forward_cpu(out, probs, lse, q, k, v, d, t);
}

void attention_lse_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& out, const Tensor& lse) {
  const char* op = "attention_lse_backward";
  const DType t = detail::real_dtype(op, q);
  MOE_CHECK(q.ndim() == 4, ShapeError, "{}: q {} must be (B,T,H,D)", op, q.describe());
  const Dims d = check(op, q, k, v, nullptr, t);
  for (const auto& [name, x] : {std::pair{"dout", &dout}, {"out", &out}, {"dq", &dq}})
    expect_tensor(op, name, *x, t, q.shape());
  expect_tensor(op, "lse", lse, t, {d.B, d.H, d.T});
  const auto gpu = detail::on_gpu(op, {&dq, &dk, &dv, &dout, &q, &k, &v, &out, &lse});
  if (gpu) {
    MOE_CHECK(fused_attention_on_gpu(), DeviceError,
              "{}: this build has no cuDNN fused attention (use attention_backward)", op);
#ifdef MOE_WITH_CUDNN
    expect_tensor(op, "dk", dk, t, k.shape());
    expect_tensor(op, "dv", dv, t, v.shape());
    return cuda::sdpa_backward(dq.data<float>(), dk.data<float>(), dv.data<float>(), dout.data<float>(),
                               q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(), lse.data<float>(),
                               d.B, d.T, d.H, d.Hkv, d.D);
#endif
  }
  Tensor probs = scratch_probs(q);
  recompute_probs(probs, q, k, lse, d, t);
  attention_backward(dq, dk, dv, dout, q, k, v, probs);
}

}  // namespace moe::ops
