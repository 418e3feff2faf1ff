// Row movement on the GPU (kernels/ops.h has the contracts, kernels/cpu/rows.cpp the
// reference). The host's index lists travel in one copy per call; each output row is one
// block, its entries summed in list order, so results equal the CPU's bit for bit.
#include <vector>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

namespace moe::cuda {
namespace {
constexpr int kThreads = 256;

// The host lists of one call, concatenated into one device buffer (a pageable-memory copy:
// the host vector may go as soon as the call returns).
class DeviceLists {
 public:
  explicit DeviceLists(std::initializer_list<std::pair<const std::int32_t*, std::int64_t>> lists)
      : dev_(total(lists)) {
    std::vector<std::int32_t> host;
    for (auto [p, n] : lists) {
      offsets_.push_back(static_cast<std::int64_t>(host.size()));
      if (p) host.insert(host.end(), p, p + n);
    }
    MOE_CUDA_CHECK(cudaMemcpyAsync(dev_.p, host.data(), host.size() * sizeof(std::int32_t), cudaMemcpyHostToDevice, 0));
  }
  const std::int32_t* operator[](std::size_t i) const { return dev_.p + offsets_[i]; }

 private:
  static std::int64_t total(std::initializer_list<std::pair<const std::int32_t*, std::int64_t>> lists) {
    std::int64_t n = 0;
    for (auto [p, len] : lists) n += p ? len : 0;
    return n;
  }
  Scratch<std::int32_t> dev_;
  std::vector<std::int64_t> offsets_;
};

__global__ void gather_rows_kernel(char* out, const char* in, const std::int32_t* src, std::size_t bytes) {
  const std::int64_t r = blockIdx.x;
  const char* s = in + static_cast<std::size_t>(src[r]) * bytes;
  char* d = out + static_cast<std::size_t>(r) * bytes;
  for (std::size_t i = threadIdx.x; i < bytes; i += blockDim.x) d[i] = s[i];
}

__global__ void gather_sum_kernel(float* out, const float* in, const std::int32_t* offsets, const std::int32_t* src,
                                  const std::int32_t* widx, const float* w, std::int64_t C, bool accumulate) {
  const std::int64_t m = blockIdx.x;
  const std::int32_t begin = offsets[m], end = offsets[m + 1];
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    std::int32_t j = begin;
    float acc = 0.f;
    if (accumulate) acc = out[m * C + c];
    else if (j < end) acc = (w ? w[widx[j]] * in[src[j] * C + c] : in[src[j] * C + c]), ++j;
    for (; j < end; ++j) acc = __fadd_rn(acc, w ? __fmul_rn(w[widx[j]], in[src[j] * C + c]) : in[src[j] * C + c]);
    out[m * C + c] = acc;
  }
}

__global__ void row_dot_kernel(float* out, const float* a, const std::int32_t* ar, const float* b, const std::int32_t* br,
                               std::int64_t C) {
  const std::int64_t j = blockIdx.x;
  const float *x = a + ar[j] * C, *y = b + br[j] * C;
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
  DeviceLists lists{{src, R}};
  gather_rows_kernel<<<static_cast<unsigned>(R), kThreads>>>(static_cast<char*>(out), static_cast<const char*>(in), lists[0],
                                                            row_bytes);
  launched();
}

void gather_sum(float* out, const float* in, const std::int32_t* offsets, const std::int32_t* src, const std::int32_t* widx,
                const float* weights, std::int64_t M, std::int64_t C, std::int64_t nnz, bool accumulate) {
  if (M == 0 || C == 0) return;
  DeviceLists lists{{offsets, M + 1}, {src, nnz}, {widx, widx ? nnz : 0}};
  gather_sum_kernel<<<static_cast<unsigned>(M), kThreads>>>(out, in, lists[0], lists[1], widx ? lists[2] : nullptr, weights, C,
                                                           accumulate);
  launched();
}

void row_dot(float* out, const float* a, const std::int32_t* a_rows, const float* b, const std::int32_t* b_rows,
             std::int64_t J, std::int64_t C) {
  if (J == 0) return;
  DeviceLists lists{{a_rows, J}, {b_rows, J}};
  row_dot_kernel<<<static_cast<unsigned>(J), kThreads>>>(out, a, lists[0], b, lists[1], C);
  launched();
}

}  // namespace moe::cuda
