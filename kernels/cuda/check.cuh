// MOE_CUDA_CHECK(call): turns a CUDA runtime error into a DeviceError naming the call and site;
// launched() and Scratch: what every kernel file shares.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/error.h"

#define MOE_CUDA_CHECK(call)                                                                             \
  do {                                                                                                   \
    cudaError_t moe_err_ = (call);                                                                       \
    if (moe_err_ != cudaSuccess)                                                                         \
      throw ::moe::DeviceError(                                                                          \
          fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #call, cudaGetErrorString(moe_err_))); \
  } while (0)

namespace moe::cuda {
// After a kernel launch: launch errors throw here. Every kernel, copy and cuBLASLt / cuDNN
// call runs in order on the legacy default stream, and nothing waits for the device until a
// result is read on the host (a cudaMemcpy) or synchronize() is called; an error inside a
// kernel therefore surfaces at the next such point (CUDA_LAUNCH_BLOCKING=1 makes it surface
// at its launch, for debugging).
inline void launched() { MOE_CUDA_CHECK(cudaGetLastError()); }

// Device scratch of n elements of T, allocated and freed in stream order (the memory pool
// reuses it at once; no device-wide synchronisation).
template <class T>
struct Scratch {
  T* p = nullptr;
  explicit Scratch(std::int64_t n) {
    MOE_CUDA_CHECK(
        cudaMallocAsync(reinterpret_cast<void**>(&p), static_cast<std::size_t>(n > 0 ? n : 1) * sizeof(T), 0));
  }
  ~Scratch() { (void)cudaFreeAsync(p, 0); }
  Scratch(Scratch&& o) noexcept : p(o.p) { o.p = nullptr; }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};
}  // namespace moe::cuda
