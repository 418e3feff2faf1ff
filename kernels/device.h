// Where a tensor's bytes live, and the few memory primitives that differ between host and GPU.
// kernels/device.cpp calls into kernels/cuda only when the build has CUDA (MOE_WITH_CUDA);
// without it a device request throws DeviceError instead of failing at link time.
#pragma once
#include <cstddef>
#include <string_view>

namespace moe {

// sim: a simulated GPU for CI. Its tensors live in host memory that host code may not touch:
// Tensor::data() / raw() outside an op's kernels throw ResidencyError (kernels/residency.h);
// ops run their CPU kernels on it, so results equal the CPU's bit for bit, and every copy
// between it and the host, and every wait for it, is counted like a GPU's.
enum class Device : unsigned char { cpu, cuda, sim };

constexpr std::string_view device_name(Device d) {
  return d == Device::cpu ? "cpu" : d == Device::cuda ? "cuda" : "sim";
}
// Whether host code may read and write a tensor's bytes on `d` directly.
constexpr bool host_readable(Device d) { return d == Device::cpu; }
// Whether ops on `d` run CUDA kernels (sim runs the CPU kernels behind its residency checks).
constexpr bool runs_cuda(Device d) { return d == Device::cuda; }

bool built_with_cuda();
int cuda_device_count();  // 0 without CUDA support or without a GPU
// The GPU this process uses: local_rank modulo the GPUs visible (one process per GPU, as
// mpirun places them on a node); DeviceError without CUDA or without a GPU.
void use_cuda_device(int local_rank);

// Waits until the device has run everything issued to it (kernels are asynchronous on the
// GPU: a host timer around them needs this). No-op on the CPU; counted as a host wait on a
// device (kernels/residency.h).
void synchronize(Device d);

void* device_alloc(Device d, std::size_t bytes);
void device_free(Device d, void* p);
void device_memset0(Device d, void* p, std::size_t bytes);
// Copies between any two devices (host<->device, device<->device, host<->host); the ones
// between host and device are counted (kernels/residency.h).
void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes);

}  // namespace moe
