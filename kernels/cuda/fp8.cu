// FP8 fine-grained quantisation and the scaled GEMM's reference on the GPU, bit for bit the
// CPU's (kernels/cpu/fp8.cpp; the definitions are in kernels/ops.h). The reference GEMM is
// one thread per output and slow: it is the oracle the cuBLASLt path is checked against on
// the GPU itself, as the CPU's is here.
#include <cuda_fp8.h>

#include <cfloat>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

namespace moe::cuda {
namespace {
constexpr int kTile = 128;
__host__ __device__ constexpr std::int64_t tiles(std::int64_t n) { return (n + kTile - 1) / kTile; }

// amax / 448, or the power of two at or above it; 1 for zero, FP32-denormal or NaN amax.
__device__ float tile_scale(float amax, bool pow2) {
  float s = __fdiv_rn(amax, 448.f);
  if (!(s >= FLT_MIN)) return 1.f;
  if (pow2) {
    int e = 0;
    const float m = frexpf(s, &e);
    s = ldexpf(1.f, m == 0.5f ? e - 1 : e);
  }
  return s;
}

__device__ std::uint8_t to_e4m3(float v) {
  return static_cast<std::uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}
__device__ double from_e4m3(std::uint8_t c) {
  return static_cast<double>(__half2float(__half(__nv_cvt_fp8_to_halfraw(c, __NV_E4M3))));
}

// The block's largest |x| over its threads' values (fmaxf drops NaN, as std::max does on the CPU).
__device__ float block_amax(float v) {
  __shared__ float warp_max[32];
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < (blockDim.x + 31) / 32 ? warp_max[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0) warp_max[0] = v;
  }
  __syncthreads();
  return warp_max[0];
}

// One block of `rows` x 128 columns per CUDA block (rows 1: an activation tile; 128: a weight
// block), 128 threads, thread t owning column t of the tile.
__global__ void quantize_kernel(std::uint8_t* __restrict__ q, float* __restrict__ scales, const float* __restrict__ x,
                                std::int64_t R, std::int64_t K, int rows, bool pow2) {
  // grid.x: blocks of rows (up to 2^31 - 1 of them), grid.y: tiles along K.
  const std::int64_t r0 = blockIdx.x * static_cast<std::int64_t>(rows),
                     c = blockIdx.y * std::int64_t{kTile} + threadIdx.x;
  const std::int64_t r1 = r0 + rows < R ? r0 + rows : R;
  float amax = 0.f;
  if (c < K)
    for (std::int64_t r = r0; r < r1; ++r) amax = fmaxf(amax, fabsf(x[r * K + c]));
  const float s = tile_scale(block_amax(amax), pow2);
  if (c < K)
    for (std::int64_t r = r0; r < r1; ++r) q[r * K + c] = to_e4m3(__fdiv_rn(x[r * K + c], s));
  if (threadIdx.x == 0) scales[blockIdx.x * tiles(K) + blockIdx.y] = s;
}

// y[m,n] = sum over 128-chunks t, in order, of (float(exact chunk sum) * sa[m,t]) * sb[.,t].
__global__ void fp8_gemm_reference_kernel(float* __restrict__ y, const std::uint8_t* __restrict__ a,
                                          const float* __restrict__ sa, const std::uint8_t* __restrict__ b,
                                          const float* __restrict__ sb, std::int64_t M, std::int64_t N, std::int64_t K,
                                          bool b_rows) {
  const std::int64_t n = blockIdx.y * static_cast<std::int64_t>(blockDim.x) + threadIdx.x, m = blockIdx.x;
  if (n >= N) return;
  const std::int64_t T = tiles(K);
  float acc = 0.f;
  for (std::int64_t t = 0; t < T; ++t) {
    double exact = 0;  // products of E4M3 values and sums of 128 of them are exact in double
    for (std::int64_t k = t * kTile; k < K && k < (t + 1) * kTile; ++k)
      exact += from_e4m3(a[m * K + k]) * from_e4m3(b[n * K + k]);
    const float scaled = __fmul_rn(static_cast<float>(exact), sa[m * T + t]);
    acc = __fadd_rn(acc, __fmul_rn(scaled, sb[(b_rows ? n : n / kTile) * T + t]));
  }
  y[m * N + n] = acc;
}

}  // namespace

void quantize(std::uint8_t* q, float* scales, const float* x, std::int64_t R, std::int64_t K, int rows, bool pow2) {
  if (R == 0 || K == 0) return;
  const dim3 grid(static_cast<unsigned>((R + rows - 1) / rows), static_cast<unsigned>(tiles(K)));
  quantize_kernel<<<grid, kTile>>>(q, scales, x, R, K, rows, pow2);
  launched();
}

void fp8_gemm_reference(float* y, const std::uint8_t* qa, const float* sa, const std::uint8_t* qb, const float* sb,
                        std::int64_t M, std::int64_t N, std::int64_t K, bool b_rows) {
  if (M == 0 || N == 0) return;
  constexpr int kThreads = 128;
  const dim3 grid(static_cast<unsigned>(M), static_cast<unsigned>((N + kThreads - 1) / kThreads));
  fp8_gemm_reference_kernel<<<grid, kThreads>>>(y, qa, sa, qb, sb, M, N, K, b_rows);
  launched();
}

namespace {
__global__ void dequantize_kernel(float* x, const std::uint8_t* q, const float* scales, std::int64_t R,
                                  std::int64_t K) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= R * K) return;
  const std::int64_t r = i / K, c = i % K;
  x[i] = static_cast<float>(from_e4m3(q[i])) * scales[r * tiles(K) + c / kTile];
}
}  // namespace

void dequantize_1x128(float* x, const std::uint8_t* q, const float* scales, std::int64_t R, std::int64_t K) {
  if (R * K == 0) return;
  dequantize_kernel<<<static_cast<unsigned>((R * K + 255) / 256), 256>>>(x, q, scales, R, K);
  launched();
}

}  // namespace moe::cuda
