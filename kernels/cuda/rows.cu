// Row movement on the GPU (kernels/ops.h has the contracts, kernels/cpu/rows.cpp the
// reference). Index arrays live on the device (the dispatch plan, routing.cu). Each output
// row is one block, its terms summed in slot order, so gathers and combines equal the CPU's
// bit for bit; row_dot's double sum is a tree (equal to the CPU's up to its last bits).
#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

namespace moe::cuda {
namespace {
constexpr int kThreads = 256;

__global__ void gather_rows_kernel(char* out, const char* in, const std::int32_t* src, std::size_t bytes) {
  const std::int64_t r = blockIdx.x;
  char* d = out + static_cast<std::size_t>(r) * bytes;
  if (src[r] < 0) {
    for (std::size_t i = threadIdx.x; i < bytes; i += blockDim.x) d[i] = 0;
    return;
  }
  const char* s = in + static_cast<std::size_t>(src[r]) * bytes;
  for (std::size_t i = threadIdx.x; i < bytes; i += blockDim.x) d[i] = s[i];
}

__global__ void combine_rows_kernel(float* out, const float* in, const std::int32_t* slots, const float* w,
                                    std::int64_t W, std::int64_t C, bool accumulate) {
  const std::int64_t m = blockIdx.x;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    bool first = !accumulate;
    float acc = accumulate ? out[m * C + c] : 0.f;
    for (std::int64_t j = m * W; j < (m + 1) * W; ++j) {
      const std::int32_t s = slots[j];
      if (s < 0) continue;
      const float term = w ? __fmul_rn(w[j], in[s * C + c]) : in[s * C + c];
      acc = first ? term : __fadd_rn(acc, term);
      first = false;
    }
    out[m * C + c] = acc;
  }
}

__global__ void row_dot_kernel(float* out, const float* a, const std::int32_t* ar, const float* b,
                               const std::int32_t* br, std::int64_t C) {
  const std::int64_t j = blockIdx.x;
  const float *x = a + ar[j] * C, *y = b + (br ? br[j] : j) * C;
  double s = 0;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) s += double(x[c]) * double(y[c]);
  __shared__ double part[kThreads];
  part[threadIdx.x] = s;
  __syncthreads();
  for (int o = kThreads / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[j] = static_cast<float>(part[0]);
}
}  // namespace

void gather_rows(void* out, const void* in, const std::int32_t* src, std::int64_t R, std::size_t row_bytes) {
  if (R == 0 || row_bytes == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(R), kThreads>>>(static_cast<char*>(out), static_cast<const char*>(in), src,
                                                             row_bytes);
  launched();
}

void combine_rows(float* out, const float* in, const std::int32_t* slots, const float* weights, std::int64_t M,
                  std::int64_t W, std::int64_t C, bool accumulate) {
  if (M == 0 || C == 0) return;
  combine_rows_kernel<<<static_cast<unsigned>(M), kThreads>>>(out, in, slots, weights, W, C, accumulate);
  launched();
}

void row_dot(float* out, const float* a, const std::int32_t* a_rows, const float* b, const std::int32_t* b_rows,
             std::int64_t J, std::int64_t C) {
  if (J == 0) return;
  row_dot_kernel<<<static_cast<unsigned>(J), kThreads>>>(out, a, a_rows, b, b_rows, C);
  launched();
}

}  // namespace moe::cuda
