// CUDA kernels behind the op API (kernels/ops.h dispatches here for device tensors).
// Raw pointers: the Tensor-level entry point has already validated shapes and devices.
#pragma once
#include <cstdint>

namespace moe::cuda {

// h = silu(gate) * up, elementwise over n floats (device pointers).
void swiglu_forward(float* h, const float* gate, const float* up, std::int64_t n);

}  // namespace moe::cuda
