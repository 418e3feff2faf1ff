// Where a tensor's bytes live, and the few memory primitives that differ between host and GPU.
// kernels/device.cpp calls into kernels/cuda only when the build has CUDA (MOE_WITH_CUDA);
// without it a device request throws DeviceError instead of failing at link time.
#pragma once
#include <cstddef>
#include <string_view>

namespace moe {

enum class Device : unsigned char { cpu, cuda };

constexpr std::string_view device_name(Device d) { return d == Device::cpu ? "cpu" : "cuda"; }

bool built_with_cuda();
int cuda_device_count();  // 0 without CUDA support or without a GPU
// The GPU this process uses: local_rank modulo the GPUs visible (one process per GPU, as
// mpirun places them on a node); DeviceError without CUDA or without a GPU.
void use_cuda_device(int local_rank);

// Waits until the device has run everything issued to it (kernels are asynchronous on the
// GPU: a host timer around them needs this). No-op on the CPU.
void synchronize(Device d);

void* device_alloc(Device d, std::size_t bytes);
void device_free(Device d, void* p);
void device_memset0(Device d, void* p, std::size_t bytes);
// Copies between any two devices (host<->device, device<->device, host<->host).
void device_copy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes);

}  // namespace moe
