#include "kernels/device.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/error.h"
#include "kernels/residency.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace moe {
namespace {
constexpr std::size_t kHostAlign = 64;  // one cache line / one AVX-512 register
#ifndef MOE_WITH_CUDA
[[noreturn]] void no_cuda() {
  throw DeviceError("this moe was built without CUDA (configure with -DMOE_CUDA=ON on a machine with nvcc)");
}
#endif
}  // namespace

bool built_with_cuda() {
#ifdef MOE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int cuda_device_count() {
#ifdef MOE_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

void use_cuda_device(int local_rank) {
#ifdef MOE_WITH_CUDA
  const int n = cuda::device_count();
  if (n == 0) throw DeviceError("no CUDA device is visible (check the driver and CUDA_VISIBLE_DEVICES)");
  cuda::set_device(local_rank % n);
#else
  (void)local_rank;
  no_cuda();
#endif
}

void synchronize(Device d) {
  if (d == Device::cpu) return;
  detail::count_wait();
#ifdef MOE_WITH_CUDA
  if (d == Device::cuda) cuda::synchronize();
#else
  (void)d;
#endif
}

void* device_alloc(Device d, std::size_t bytes) {
  if (!runs_cuda(d)) {
    std::size_t rounded = (bytes + kHostAlign - 1) / kHostAlign * kHostAlign;
    void* p = std::aligned_alloc(kHostAlign, rounded ? rounded : kHostAlign);
    if (!p) throw std::bad_alloc();
    return p;
  }
#ifdef MOE_WITH_CUDA
  return cuda::malloc_device(bytes);
#else
  no_cuda();
#endif
}

void device_free(Device d, void* p) {
  if (!runs_cuda(d)) return std::free(p);
#ifdef MOE_WITH_CUDA
  cuda::free_device(p);
#endif
}

void device_memset0(Device d, void* p, std::size_t bytes) {
  if (!runs_cuda(d)) {
    std::memset(p, 0, bytes);
    return;
  }
#ifdef MOE_WITH_CUDA
  cuda::memset0(p, bytes);
#else
  no_cuda();
#endif
}

void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes) {
  if (host_readable(dst_dev) != host_readable(src_dev)) detail::count_copy(host_readable(dst_dev), bytes);
  if (!runs_cuda(dst_dev) && !runs_cuda(src_dev)) {
    std::memcpy(dst, src, bytes);
    return;
  }
  MOE_CHECK(dst_dev != Device::sim && src_dev != Device::sim, DeviceError,
            "a copy between the sim device and cuda: move through the host");
#ifdef MOE_WITH_CUDA
  cuda::copy(dst, dst_dev == Device::cuda, src, src_dev == Device::cuda, bytes);
#else
  no_cuda();
#endif
}

}  // namespace moe
