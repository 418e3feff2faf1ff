#include "kernels/cuda/check.cuh"
#include "kernels/cuda/runtime.h"

#include <cstdint>

namespace moe::cuda {

int device_count() {
  int n = 0;
  // No driver or no GPU is not an error here: the caller decides (tests skip, train refuses).
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

void set_device(int ordinal) {
  MOE_CUDA_CHECK(cudaSetDevice(ordinal));
  // Tensors come and go every layer: the device's default pool keeps freed memory for the
  // next allocation instead of handing it back to the driver (a caching allocator).
  cudaMemPool_t pool;
  MOE_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, ordinal));
  std::uint64_t keep_all = UINT64_MAX;
  MOE_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_all));
}

void synchronize() { MOE_CUDA_CHECK(cudaDeviceSynchronize()); }

// Stream-ordered on the default stream, which every kernel here runs on.
void* malloc_device(std::size_t bytes) {
  void* p = nullptr;
  MOE_CUDA_CHECK(cudaMallocAsync(&p, bytes ? bytes : 1, 0));
  return p;
}

void free_device(void* p) { (void)cudaFreeAsync(p, 0); }  // never throws: called from deleters

void memset0(void* p, std::size_t bytes) { MOE_CUDA_CHECK(cudaMemset(p, 0, bytes)); }

void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, std::size_t bytes) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  MOE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
}

}  // namespace moe::cuda
