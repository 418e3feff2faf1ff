// Host-callable wrappers over the CUDA runtime, so that only .cu files include cuda_runtime.h.
#pragma once
#include <cstddef>

namespace moe::cuda {

int device_count();
// Makes `ordinal` this process's GPU and lets its memory pool cache freed blocks.
void set_device(int ordinal);
void synchronize();  // the whole device
void* malloc_device(std::size_t bytes);
void free_device(void* p);
void memset0(void* p, std::size_t bytes);
void copy(void* dst, bool dst_on_device, const void* src, bool src_on_device, std::size_t bytes);

}  // namespace moe::cuda
