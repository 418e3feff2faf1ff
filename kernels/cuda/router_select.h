// One token's expert choice as the CUDA router kernel makes it (a scan form of the CPU's
// sort in kernels/cpu/router.cpp): top-k by biased score s + bias inside the best topk_groups
// groups (group score: the sum of its top-2 biased scores), equal scores to the lower index,
// by repeated arg-max scans in index order, so no per-token arrays are needed. Plain C++ that
// nvcc also compiles for the device, so a unit test holds it to the CPU reference on the host.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe::cuda {

inline constexpr int kMaxRouterGroups = 64;  // the allowed groups are one 64-bit mask

MOE_HOST_DEVICE inline void router_select(std::int32_t* idx, const float* s, const float* bias, int E, int K,
                                          int n_groups, int topk_groups) {
  const auto c = [&](int e) { return s[e] + bias[e]; };
  const int gs = E / n_groups;
  unsigned long long allowed = ~0ull;
  if (n_groups > 1 && topk_groups < n_groups) {
    float gscore[kMaxRouterGroups];
    for (int g = 0; g < n_groups; ++g) {
      int first = -1, second = -1;
      for (int e = g * gs; e < (g + 1) * gs; ++e) {
        if (first < 0 || c(e) > c(first)) second = first, first = e;
        else if (second < 0 || c(e) > c(second)) second = e;
      }
      gscore[g] = 0.f + c(first);
      if (second >= 0) gscore[g] += c(second);
    }
    allowed = 0;
    for (int i = 0; i < topk_groups; ++i) {
      int best = -1;
      for (int g = 0; g < n_groups; ++g)
        if (!(allowed >> g & 1ull) && (best < 0 || gscore[g] > gscore[best])) best = g;
      allowed |= 1ull << best;
    }
  }
  for (int i = 0; i < K; ++i) {
    int best = -1;
    for (int e = 0; e < E; ++e) {
      if (!(allowed >> (e / gs) & 1ull)) continue;
      bool taken = false;
      for (int j = 0; j < i; ++j) taken |= idx[j] == e;
      if (!taken && (best < 0 || c(e) > c(best))) best = e;
    }
    idx[i] = best;
  }
}

}  // namespace moe::cuda
