// Attention entry points (kernels/ops.h): causal GQA attention materialising the
// probabilities, and the fused (log-sum-exp) form that cuDNN runs on the GPU. Kernels in
// cpu/attention.cpp; on the GPU, cuda/sdpa.cpp or the fallback below, composed of cuBLASLt
// GEMMs and cuda/basic.cu's masked softmax.
#include <cmath>
#include <utility>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"
#include "kernels/ops/device_gemm.h"

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

void attention_forward_gpu(const Dims& d, float* out, float* probs, const float* q, const float* k, const float* v,
                           const std::int32_t* positions) {
  if constexpr (detail::kCudaBuilt) {  // (a build without CUDA never gets here: on_gpu throws)
    const std::int64_t T = d.T, D = d.D, ldq = d.H * D, ldk = d.Hkv * D;
    for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
      detail::device_gemm(true, false, true, T, T, D, q + qo, ldq, k + ko, ldk, 0.f, probs + po, T);  // S = Q K^T
    });
    cuda::causal_softmax(probs, d.B * d.H * T, T, 1.0f / std::sqrt(float(D)), positions, d.H);
    for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
      detail::device_gemm(true, false, false, T, D, T, probs + po, T, v + ko, ldk, 0.f, out + qo, ldq);  // O = P V
    });
  }
}

void attention_backward_gpu(const Dims& d, float* dq, float* dk, float* dv, const float* dout, const float* q,
                            const float* k, const float* v, const float* probs) {
  if constexpr (detail::kCudaBuilt) {  // (a build without CUDA never gets here: on_gpu throws)
    const std::int64_t T = d.T, D = d.D, ldq = d.H * D, ldk = d.Hkv * D;
    Tensor dS = Tensor::empty({d.B, d.H, T, T}, DType::f32, Device::cuda);
    float* ds = dS.data<float>();
    for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
      detail::device_gemm(true, false, true, T, T, D, dout + qo, ldq, v + ko, ldk, 0.f, ds + po, T);  // dP = dO V^T
      detail::device_gemm(true, true, false, T, D, T, probs + po, T, dout + qo, ldq, 1.f, dv + ko,
                          ldk);  // dV += P^T dO
    });
    cuda::causal_softmax_backward(ds, probs, d.B * d.H * T, T, 1.0f / std::sqrt(float(D)));
    for_each_head(d, [&](std::int64_t qo, std::int64_t ko, std::int64_t po) {
      detail::device_gemm(true, false, false, T, D, T, ds + po, T, k + ko, ldk, 0.f, dq + qo, ldq);  // dQ = dS K
      detail::device_gemm(true, true, false, T, D, T, ds + po, T, q + qo, ldq, 1.f, dk + ko, ldk);   // dK += dS^T Q
    });
  }
}
Tensor scratch_probs(const Tensor& q) {
  return Tensor::empty({q.size(0), q.size(2), q.size(1), q.size(1)}, q.dtype(), q.device());
}
}  // namespace

void attention_forward(Tensor& out, Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& positions) {
  const char* op = "attention_forward";
  DType t = detail::real_dtype(op, q);
  const Dims d = check(op, q, k, v, &probs, t);
  expect_tensor(op, "out", out, t, q.shape());
  expect_positions(op, positions, d.B, d.T, q.device());
  const auto gpu = detail::on_gpu(op, {&out, &probs, &q, &k, &v, &positions});
  detail::expect_f32_on_gpu(bool(gpu), op, q);
  if (gpu)
    return attention_forward_gpu(d, out.data<float>(), probs.data<float>(), q.data<float>(), k.data<float>(),
                                 v.data<float>(), positions.defined() ? positions.data<std::int32_t>() : nullptr);
  Tensor no_lse;
  cpu::attention_forward(out, probs, no_lse, q, k, v, positions);
}

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
  detail::expect_f32_on_gpu(bool(gpu), op, q);
  dk.zero();  // dk, dv gather from every query head of their group: zero, then add
  dv.zero();
  if (gpu)
    return attention_backward_gpu(d, dq.data<float>(), dk.data<float>(), dv.data<float>(), dout.data<float>(),
                                  q.data<float>(), k.data<float>(), v.data<float>(), probs.data<float>());
  cpu::attention_backward(dq, dk, dv, dout, q, k, v, probs);
}

bool fused_attention_on_gpu() { return detail::kCudnnBuilt; }

void attention_cached_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v) {
  const char* op = "attention_cached_forward";
  const DType t = detail::real_dtype(op, q);
  MOE_CHECK(q.ndim() == 4 && k.ndim() == 4 && k.size(0) == q.size(0) && k.size(1) >= q.size(1), ShapeError,
            "{}: q {} (B,N,H,D) and k {} (B,S,Hkv,D) with S >= N", op, q.describe(), k.describe());
  const std::int64_t H = q.size(2), Hkv = k.size(2);
  MOE_CHECK(Hkv > 0 && H % Hkv == 0 && k.size(3) == q.size(3), ShapeError, "{}: q {} and k {}: heads or widths", op,
            q.describe(), k.describe());
  expect_tensor(op, "v", v, t, k.shape());
  expect_tensor(op, "out", out, t, q.shape());
  const auto gpu = detail::on_gpu(op, {&out, &q, &k, &v});
  MOE_CHECK(!gpu, DeviceError, "{}: decoding with a KV cache runs on the CPU for now", op);
  cpu::attention_cached(out, q, k, v);
}

void attention_lse_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& positions) {
  const char* op = "attention_lse_forward";
  const DType t = detail::real_dtype(op, q);
  MOE_CHECK(q.ndim() == 4, ShapeError, "{}: q {} must be (B,T,H,D)", op, q.describe());
  const Dims d = check(op, q, k, v, nullptr, t);
  expect_tensor(op, "out", out, t, q.shape());
  expect_tensor(op, "lse", lse, t, {d.B, d.H, d.T});
  expect_positions(op, positions, d.B, d.T, q.device());
  const auto gpu = detail::on_gpu(op, {&out, &lse, &q, &k, &v, &positions});
  if (gpu) {
    MOE_CHECK(fused_attention_on_gpu(), DeviceError,
              "{}: this build has no cuDNN fused attention (use attention_forward)", op);
    MOE_CHECK(!positions.defined(), DeviceError,
              "{}: cuDNN's fused attention here takes no document positions (use attention_forward)", op);
    if constexpr (detail::kCudnnBuilt)
      return cuda::sdpa_forward(out.data<float>(), lse.data<float>(), q.data<float>(), k.data<float>(), v.data<float>(),
                                d.B, d.T, d.H, d.Hkv, d.D);
  }
  Tensor probs = scratch_probs(q);  // the CPU's softmax, on q's device (the sim device's too)
  cpu::attention_forward(out, probs, lse, q, k, v, positions);
}

void attention_lse_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& positions) {
  const char* op = "attention_lse_backward";
  const DType t = detail::real_dtype(op, q);
  MOE_CHECK(q.ndim() == 4, ShapeError, "{}: q {} must be (B,T,H,D)", op, q.describe());
  const Dims d = check(op, q, k, v, nullptr, t);
  for (const auto& [name, x] : {std::pair{"dout", &dout}, {"out", &out}, {"dq", &dq}})
    expect_tensor(op, name, *x, t, q.shape());
  expect_tensor(op, "lse", lse, t, {d.B, d.H, d.T});
  expect_positions(op, positions, d.B, d.T, q.device());
  const auto gpu = detail::on_gpu(op, {&dq, &dk, &dv, &dout, &q, &k, &v, &out, &lse, &positions});
  if (gpu) {
    MOE_CHECK(fused_attention_on_gpu(), DeviceError,
              "{}: this build has no cuDNN fused attention (use attention_backward)", op);
    MOE_CHECK(!positions.defined(), DeviceError,
              "{}: cuDNN's fused attention here takes no document positions (use attention_backward)", op);
    expect_tensor(op, "dk", dk, t, k.shape());
    expect_tensor(op, "dv", dv, t, v.shape());
    if constexpr (detail::kCudnnBuilt)
      return cuda::sdpa_backward(dq.data<float>(), dk.data<float>(), dv.data<float>(), dout.data<float>(),
                                 q.data<float>(), k.data<float>(), v.data<float>(), out.data<float>(),
                                 lse.data<float>(), d.B, d.T, d.H, d.Hkv, d.D);
  }
  Tensor probs = scratch_probs(q);
  cpu::recompute_probs(probs, q, k, lse, positions);
  attention_backward(dq, dk, dv, dout, q, k, v, probs);
}

}  // namespace moe::ops
