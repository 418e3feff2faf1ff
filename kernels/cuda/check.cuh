// MOE_CUDA_CHECK(call): turns a CUDA runtime error into a DeviceError naming the call and site.
#pragma once
#include <cuda_runtime.h>

#include "kernels/error.h"

#define MOE_CUDA_CHECK(call)                                                           \
  do {                                                                                 \
    cudaError_t moe_err_ = (call);                                                     \
    if (moe_err_ != cudaSuccess)                                                       \
      throw ::moe::DeviceError(fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, \
                                           #call, cudaGetErrorString(moe_err_)));      \
  } while (0)
