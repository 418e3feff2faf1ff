// The dispatch plan on the GPU (kernels/cpu/routing.cpp is the reference, kernels/ops.h the
// contracts). Integer results are exact whatever the order; the balance loss's double sums
// run in the CPU's order (one thread per sum), so every result equals the CPU's bit for bit.
// The stable ranks of a counting sort come from one block per bin scanning the keys in order
// (cub::BlockScan): bins x n work, small next to the GEMMs it feeds.
#include <cub/block/block_scan.cuh>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

namespace moe::cuda {
namespace {
constexpr int kThreads = 256;
unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// rank[i] = #{j < i : bin(j) == bin(i)} for every i with keys[i] >= 0 (bin = keys / divisor);
// counts[b] = the elements of bin b. Block b handles bin b.
__global__ void rank_in_bin_kernel(std::int32_t* rank, std::int32_t* counts, const std::int32_t* keys, std::int64_t n,
                                   std::int64_t divisor) {
  using Scan = cub::BlockScan<int, kThreads>;
  __shared__ typename Scan::TempStorage tmp;
  const int bin = static_cast<int>(blockIdx.x);
  int running = 0;
  for (std::int64_t base = 0; base < n; base += kThreads) {
    const std::int64_t i = base + threadIdx.x;
    const int mine = i < n && keys[i] >= 0 && keys[i] / divisor == bin;
    int before = 0, total = 0;
    Scan(tmp).ExclusiveSum(mine, before, total);
    if (mine) rank[i] = running + before;
    running += total;
    __syncthreads();  // tmp is reused by the next chunk's scan
  }
  if (threadIdx.x == 0) counts[bin] = running;
}

// starts[b] = counts[0] + ... + counts[b-1] (one thread: bins are few).
__global__ void exclusive_scan_kernel(std::int32_t* starts, const std::int32_t* counts, std::int64_t bins) {
  std::int32_t s = 0;
  for (std::int64_t b = 0; b < bins; ++b) starts[b] = s, s += counts[b];
}

__global__ void place_kernel(std::int32_t* dest, const std::int32_t* keys, const std::int32_t* starts, std::int64_t n,
                             std::int64_t divisor) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  dest[i] = keys[i] < 0 ? -1 : starts[keys[i] / divisor] + dest[i];
}

__global__ void capacity_kernel(std::int32_t* kept, std::int32_t* counts, const std::int32_t* index,
                                const std::int32_t* rank, std::int64_t N, std::int64_t K, std::int64_t E,
                                std::int64_t capacity, std::int64_t n0, std::int64_t n1) {
  const std::int64_t a = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (a >= N * K) return;
  const std::int32_t e = index[a];
  const bool mine = a / K >= n0 && a / K < n1, keep = capacity < 0 || rank[a] < capacity;
  kept[a] = mine && keep ? e : -1;
  if (mine) atomicAdd(counts + e, 1);
  if (mine && keep) atomicAdd(counts + E + e, 1);
}

__global__ void pairs_kernel(std::int32_t* pairs, std::int32_t* fan_out, const std::int32_t* kept, std::int64_t N,
                             std::int64_t K, std::int64_t P, std::int64_t per_rank) {
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  std::int32_t* out = pairs + n * P;
  for (std::int64_t j = 0; j < P; ++j) out[j] = -1;
  int reached = 0;
  for (std::int64_t k = 0; k < K; ++k)
    if (const std::int32_t e = kept[n * K + k]; e >= 0) {
      const auto j = static_cast<std::int32_t>(e / per_rank);
      reached += out[j] < 0;
      out[j] = j;
    }
  atomicMax(fan_out, reached);
}

__global__ void set_kernel(std::int32_t* x, std::int32_t value) { *x = value; }

__global__ void pick_kernel(std::int32_t* out, std::int32_t* counts, const std::int32_t* kept, const std::int32_t* t,
                            std::int64_t NK, std::int64_t K, std::int64_t experts) {
  const std::int64_t a = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (a >= NK) return;
  const std::int32_t e = kept[a];
  out[a] = e < 0 ? -1 : t[experts + 1 + t[e] + (a / K) % (t[e + 1] - t[e])];
  if (e >= 0) atomicAdd(counts + out[a], 1);  // integers: the sum does not depend on the order
}

__global__ void invert_kernel(std::int32_t* src, const std::int32_t* dest, std::int64_t n, std::int64_t divisor) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n && dest[i] >= 0) src[dest[i]] = static_cast<std::int32_t>(i / divisor);
}

__global__ void slots_kernel(std::int32_t* expert, std::int32_t* assignment, const std::int32_t* kept,
                             const std::int32_t* rows, std::int64_t N, std::int64_t K, std::int64_t P,
                             std::int64_t per_rank) {
  const std::int64_t a = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (a >= N * K || kept[a] < 0) return;
  const std::int64_t e = kept[a], j = e / per_rank, slot = std::int64_t(rows[(a / K) * P + j]) * K + a % K;
  expert[slot] = static_cast<std::int32_t>(e - j * per_rank);
  assignment[slot] = static_cast<std::int32_t>(a);
}

// S[n] = the sum of token n's scores, in expert order.
__global__ void score_sums_kernel(double* S, const float* scores, std::int64_t N, std::int64_t E) {
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  double s = 0;
  for (std::int64_t e = 0; e < E; ++e) s = __dadd_rn(s, double(scores[n * E + e]));
  S[n] = s;
}

// One thread per (sequence b, expert e): f adds E/(KT) once per choice of e (equal terms, so
// the count fixes the sum), P adds s/S/T over the tokens in order; term = coef f P.
__global__ void balance_terms_kernel(double* f, double* term, const float* scores, const double* S,
                                     const std::int32_t* index, std::int64_t B, std::int64_t T, std::int64_t E,
                                     std::int64_t K, double coef) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= B * E) return;
  const std::int64_t b = i / E, e = i % E;
  const double unit = double(E) / double(K * T);
  double fe = 0, P = 0;
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t n = b * T + t;
    for (std::int64_t k = 0; k < K; ++k)
      if (index[n * K + k] == e) fe = __dadd_rn(fe, unit);
    P = __dadd_rn(P, double(scores[n * E + e]) / S[n] / double(T));
  }
  f[i] = fe;
  term[i] = __dmul_rn(__dmul_rn(coef, fe), P);
}

__global__ void balance_total_kernel(double* total, const double* term, std::int64_t n) {
  double loss = 0;
  for (std::int64_t i = 0; i < n; ++i) loss = __dadd_rn(loss, term[i]);
  total[0] = __dadd_rn(total[0], loss);
}

__global__ void balance_backward_kernel(float* dscores, const double* f, const float* scores, std::int64_t N,
                                        std::int64_t T, std::int64_t E, double coef, double scale) {
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const double* fb = f + (n / T) * E;
  const float* s = scores + n * E;
  double S = 0, dot = 0;
  for (std::int64_t e = 0; e < E; ++e) S = __dadd_rn(S, double(s[e]));
  for (std::int64_t e = 0; e < E; ++e)
    dot = __dadd_rn(dot, __dmul_rn(__dmul_rn(coef, fb[e]) / double(T), double(s[e])) / S);
  for (std::int64_t e = 0; e < E; ++e)
    dscores[n * E + e] = static_cast<float>(__dmul_rn(scale, __dsub_rn(__dmul_rn(coef, fb[e]) / double(T), dot)) / S);
}
// One thread per row: its log-sum-exp in double (E is the router's few hundred at most),
// and the row's z term for the ordered total.
__global__ void z_lse_kernel(float* lse, double* term, const float* logits, std::int64_t N, std::int64_t T,
                             std::int64_t E, double coef) {
  const std::int64_t n = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (n >= N) return;
  const float* row = logits + n * E;
  double mx = row[0], s = 0;
  for (std::int64_t e = 1; e < E; ++e) mx = fmax(mx, double(row[e]));
  for (std::int64_t e = 0; e < E; ++e) s = __dadd_rn(s, exp(double(row[e]) - mx));
  const float l = static_cast<float>(mx + log(s));
  lse[n] = l;
  term[n] = __dmul_rn(coef / double(T), __dmul_rn(double(l), double(l)));
}

__global__ void z_backward_kernel(float* dlogits, const float* logits, const float* lse, std::int64_t N, std::int64_t T,
                                  std::int64_t E, double coef, double scale) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N * E) return;
  const std::int64_t n = i / E;
  const double g = scale * 2 * coef / double(T) * double(lse[n]);
  dlogits[i] += static_cast<float>(g * exp(double(logits[i]) - double(lse[n])));
}
}  // namespace

void route_capacity(std::int32_t* kept, std::int32_t* counts, const std::int32_t* index, std::int64_t N, std::int64_t K,
                    std::int64_t E, std::int64_t capacity, std::int64_t n0, std::int64_t n1) {
  MOE_CUDA_CHECK(cudaMemsetAsync(counts, 0, static_cast<std::size_t>(2 * E) * sizeof(std::int32_t), 0));
  if (N * K == 0) return;
  Scratch<std::int32_t> rank(capacity < 0 ? 0 : N * K), per_expert(E);
  if (capacity >= 0) {  // each assignment's place among its expert's, in token order
    rank_in_bin_kernel<<<static_cast<unsigned>(E), kThreads>>>(rank.p, per_expert.p, index, N * K, 1);
    launched();
  }
  capacity_kernel<<<blocks_for(N * K), kThreads>>>(kept, counts, index, rank.p, N, K, E, capacity, n0, n1);
  launched();
}

void route_pairs(std::int32_t* pairs, std::int32_t* fan_out, const std::int32_t* kept, std::int64_t N, std::int64_t K,
                 std::int64_t P, std::int64_t experts_per_rank) {
  set_kernel<<<1, 1>>>(fan_out, 1);  // at least 1, tokens or not
  launched();
  if (N == 0) return;
  pairs_kernel<<<blocks_for(N), kThreads>>>(pairs, fan_out, kept, N, K, P, experts_per_rank);
  launched();
}

void pick_instances(std::int32_t* instances, std::int32_t* counts, const std::int32_t* kept, const std::int32_t* table,
                    std::int64_t N, std::int64_t K, std::int64_t experts, std::int64_t I) {
  MOE_CUDA_CHECK(cudaMemsetAsync(counts, 0, static_cast<std::size_t>(I) * sizeof(std::int32_t), 0));
  if (N * K == 0) return;
  pick_kernel<<<blocks_for(N * K), kThreads>>>(instances, counts, kept, table, N * K, K, experts);
  launched();
}

void counting_sort(std::int32_t* dest, std::int32_t* counts, const std::int32_t* keys, std::int64_t n,
                   std::int64_t bins, std::int64_t divisor) {
  Scratch<std::int32_t> own(counts ? 0 : bins), starts(bins);
  std::int32_t* c = counts ? counts : own.p;
  rank_in_bin_kernel<<<static_cast<unsigned>(bins), kThreads>>>(dest, c, keys, n, divisor);
  launched();
  if (n == 0) return;
  exclusive_scan_kernel<<<1, 1>>>(starts.p, c, bins);
  launched();
  place_kernel<<<blocks_for(n), kThreads>>>(dest, keys, starts.p, n, divisor);
  launched();
}

void invert_positions(std::int32_t* src, const std::int32_t* dest, std::int64_t n, std::int64_t M,
                      std::int64_t divisor) {
  MOE_CUDA_CHECK(cudaMemsetAsync(src, 0xff, static_cast<std::size_t>(M) * sizeof(std::int32_t), 0));  // -1
  if (n == 0) return;
  invert_kernel<<<blocks_for(n), kThreads>>>(src, dest, n, divisor);
  launched();
}

void dispatch_slots(std::int32_t* expert, std::int32_t* assignment, const std::int32_t* kept, const std::int32_t* rows,
                    std::int64_t N, std::int64_t K, std::int64_t P, std::int64_t S, std::int64_t experts_per_rank) {
  const auto bytes = static_cast<std::size_t>(S * K) * sizeof(std::int32_t);
  MOE_CUDA_CHECK(cudaMemsetAsync(expert, 0xff, bytes, 0));
  MOE_CUDA_CHECK(cudaMemsetAsync(assignment, 0xff, bytes, 0));
  if (N * K == 0) return;
  slots_kernel<<<blocks_for(N * K), kThreads>>>(expert, assignment, kept, rows, N, K, P, experts_per_rank);
  launched();
}

void balance_loss_forward(double* total, double* f, const float* scores, const std::int32_t* index, std::int64_t B,
                          std::int64_t T, std::int64_t E, std::int64_t K, double coef) {
  if (B * E == 0) return;
  Scratch<double> S(B * T), term(B * E);
  score_sums_kernel<<<blocks_for(B * T), kThreads>>>(S.p, scores, B * T, E);
  launched();
  balance_terms_kernel<<<blocks_for(B * E), kThreads>>>(f, term.p, scores, S.p, index, B, T, E, K, coef);
  launched();
  balance_total_kernel<<<1, 1>>>(total, term.p, B * E);
  launched();
}

void balance_loss_backward(float* dscores, const double* f, const float* scores, std::int64_t N, std::int64_t T,
                           std::int64_t E, double coef, double scale) {
  if (N == 0) return;
  balance_backward_kernel<<<blocks_for(N), kThreads>>>(dscores, f, scores, N, T, E, coef, scale);
  launched();
}

void router_z_loss_forward(double* total, float* lse, const float* logits, std::int64_t N, std::int64_t T,
                           std::int64_t E, double coef) {
  if (N == 0) return;
  Scratch<double> term(N);
  z_lse_kernel<<<blocks_for(N), kThreads>>>(lse, term.p, logits, N, T, E, coef);
  launched();
  balance_total_kernel<<<1, 1>>>(total, term.p, N);
  launched();
}

void router_z_loss_backward(float* dlogits, const float* logits, const float* lse, std::int64_t N, std::int64_t T,
                            std::int64_t E, double coef, double scale) {
  if (N * E == 0) return;
  z_backward_kernel<<<blocks_for(N * E), kThreads>>>(dlogits, logits, lse, N, T, E, coef, scale);
  launched();
}

}  // namespace moe::cuda
