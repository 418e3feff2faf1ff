// The MoE router on the GPU (kernels/cpu/router.cpp is the reference): one thread per token;
// the choice itself is router_select.h.
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

namespace moe::cuda {
namespace {
constexpr int kThreads = 128;

__global__ void router_forward_kernel(float* scores, std::int32_t* index, float* gate, const float* logits,
                                      const float* bias, std::int64_t N, int E, int K, int n_groups, int topk_groups,
                                      bool sigmoid, bool normalize, float scaling) {
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const float* l = logits + n * E;
  float* s = scores + n * E;
  if (sigmoid) {
    for (int e = 0; e < E; ++e) s[e] = 1.0f / (1.0f + expf(-l[e]));
  } else {
    float mx = l[0], sum = 0;
    for (int e = 1; e < E; ++e) mx = fmaxf(mx, l[e]);
    for (int e = 0; e < E; ++e) sum += (s[e] = expf(l[e] - mx));
    for (int e = 0; e < E; ++e) s[e] /= sum;
  }
  std::int32_t* idx = index + n * K;
  router_select(idx, s, bias, E, K, n_groups, topk_groups);
  float sum = 0;
  for (int i = 0; i < K; ++i) sum += s[idx[i]];
  const float norm = normalize ? scaling / sum : scaling;
  for (int i = 0; i < K; ++i) gate[n * K + i] = s[idx[i]] * norm;
}

__global__ void router_backward_kernel(float* dlogits, const float* dgate, const float* scores,
                                       const std::int32_t* index, const float* dscores, std::int64_t N, int E, int K,
                                       bool sigmoid, bool normalize, float scaling) {
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const float* s = scores + n * E;
  const std::int32_t* idx = index + n * K;
  const float* dg = dgate + n * K;
  float S = 0, dot = 0;
  for (int i = 0; i < K; ++i) S += s[idx[i]], dot += dg[i] * s[idx[i]];
  // The gradient w.r.t. score e, as the CPU forms it: the gate term (assigned), then dscores.
  auto ds = [&](int e) {
    float d = 0;
    for (int i = 0; i < K; ++i)
      if (idx[i] == e) d = normalize ? scaling * (dg[i] / S - dot / (S * S)) : scaling * dg[i];
    if (dscores) d += dscores[n * E + e];
    return d;
  };
  float* dl = dlogits + n * E;
  if (sigmoid) {
    for (int e = 0; e < E; ++e) dl[e] = ds(e) * s[e] * (1.0f - s[e]);
  } else {
    float pdot = 0;
    for (int e = 0; e < E; ++e) pdot += ds(e) * s[e];
    for (int e = 0; e < E; ++e) dl[e] = s[e] * (ds(e) - pdot);
  }
}

unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }
}  // namespace

void router_forward(float* scores, std::int32_t* index, float* gate, const float* logits, const float* bias,
                    std::int64_t N, int E, int K, int n_groups, int topk_groups, bool sigmoid, bool normalize,
                    float scaling) {
  if (N == 0) return;
  router_forward_kernel<<<blocks_for(N), kThreads>>>(scores, index, gate, logits, bias, N, E, K, n_groups, topk_groups,
                                                     sigmoid, normalize, scaling);
  launched();
}

void router_backward(float* dlogits, const float* dgate, const float* scores, const std::int32_t* index,
                     const float* dscores, std::int64_t N, int E, int K, bool sigmoid, bool normalize, float scaling) {
  if (N == 0) return;
  router_backward_kernel<<<blocks_for(N), kThreads>>>(dlogits, dgate, scores, index, dscores, N, E, K, sigmoid,
                                                      normalize, scaling);
  launched();
}

}  // namespace moe::cuda
