// The op boundary (internal to kernels/): what every entry point in kernels/ops/ uses to
// validate its arguments and choose where it runs. An entry point checks shapes, dtypes,
// devices and index values here, holds a Placement, and then makes its one dispatch:
//   const auto gpu = detail::on_gpu(op, {&y, &x});
//   if (gpu) {
//     if constexpr (detail::kCudaBuilt) return cuda::kernel(...);   // kernels/cuda/ops.h
//   }
//   cpu::kernel(...);                                                // kernels/cpu/kernels.h
// The kernels behind it (cpu/, cuda/) check nothing. In a build without CUDA, on_gpu throws
// before any GPU branch, and the discarded `if constexpr` needs no CUDA symbol to link.
#pragma once
#include <fmt/format.h>

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "kernels/tensor.h"

namespace moe::ops::detail {

#ifdef MOE_WITH_CUDA
inline constexpr bool kCudaBuilt = true;
#else
inline constexpr bool kCudaBuilt = false;
#endif
#ifdef MOE_WITH_CUDNN
inline constexpr bool kCudnnBuilt = true;  // cuDNN's fused attention (kernels/cuda/sdpa.cpp)
#else
inline constexpr bool kCudnnBuilt = false;
#endif

// 2*M*N*K of every GEMM run, on either device (ops::gemm_flops()); added where each runs.
inline std::atomic<std::int64_t> gemm_flop_count{0};
inline void count_gemm(std::int64_t M, std::int64_t N, std::int64_t K) {
  gemm_flop_count.fetch_add(2 * M * N * K, std::memory_order_relaxed);
}

// The real dtype of an op call: that of `first`, which must be f32 or f64.
inline DType real_dtype(const char* op, const Tensor& first) {
  MOE_CHECK(first.defined() && (first.dtype() == DType::f32 || first.dtype() == DType::f64), ShapeError,
            "{}: expected an f32 or f64 tensor, got {}", op, first.describe());
  return first.dtype();
}

// Every defined tensor must be on the CPU (the CUDA versions have their own entry points).
inline void expect_cpu(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    MOE_CHECK(!t->defined() || t->device() == Device::cpu, ShapeError, "{}: {} is on {}, this op runs on cpu", op,
              t->describe(), device_name(t->device()));
}

// Where an op runs, held for the whole op: its kernels may reach device memory while it
// lives (a KernelScope, kernels/residency.h). True when the op calls its CUDA kernel.
// explicit and [[nodiscard]]: `const bool gpu = on_gpu(...)` would end the scope at once.
class [[nodiscard]] Placement {
 public:
  Placement(const char* op, bool gpu) : scope_(op), gpu_(gpu) {}
  explicit operator bool() const { return gpu_; }

 private:
  KernelScope scope_;
  bool gpu_;
};

// Every defined tensor on one device; true when it is the GPU (the op then calls its CUDA
// kernel, kernels/cuda/ops.h); the CPU and sim devices run the CPU kernels (kernels/cpu/). DeviceError for
// a GPU tensor in a build without CUDA. Keep the result for the whole op:
//   const auto gpu = detail::on_gpu(op, {&y, &x});
[[nodiscard]] inline Placement on_gpu(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts)
    if (t->defined()) {
      if (!first) first = t;
      MOE_CHECK(t->device() == first->device(), ShapeError, "{}: {} is on {}, {} on {}", op, t->describe(),
                device_name(t->device()), first->describe(), device_name(first->device()));
    }
  if (!first || !runs_cuda(first->device())) return Placement(op, false);
#ifndef MOE_WITH_CUDA
  throw DeviceError(fmt::format("{}: built without CUDA", op));
#endif
  return Placement(op, true);
}

// Index values of an op's i32 tensor, checked where its CPU kernel runs (cpu, sim; call it
// while the op's Placement lives): each in [-1, n), or [0, n) when none is not allowed. A
// GPU kernel takes the plan ops' own output unchecked.
inline void expect_indices(const char* op, const char* name, const Tensor& ids, std::int64_t n,
                           bool none_allowed = true) {
  const std::int32_t* v = ids.data<std::int32_t>();
  const std::int64_t lo = none_allowed ? -1 : 0;
  for (std::int64_t i = 0; i < ids.numel(); ++i)
    MOE_CHECK(v[i] >= lo && v[i] < n, ShapeError, "{}: {}[{}] = {} outside [{}, {})", op, name, i, v[i], lo, n);
}

// The CUDA kernels take f32 where the CPU reference also takes f64 (the test oracle).
inline void expect_f32_on_gpu(bool gpu, const char* op, const Tensor& t) {
  MOE_CHECK(!gpu || t.dtype() == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, t.describe());
}

}  // namespace moe::ops::detail
