// Shared boundary checks and dtype dispatch for the CPU reference ops (internal header).
#pragma once
#include <fmt/format.h>

#include <initializer_list>
#include <utility>

#include "kernels/tensor.h"

namespace moe::ops::detail {

// The real dtype of an op call: that of `first`, which must be f32 or f64.
inline DType real_dtype(const char* op, const Tensor& first) {
  MOE_CHECK(first.defined() && (first.dtype() == DType::f32 || first.dtype() == DType::f64),
            ShapeError, "{}: expected an f32 or f64 tensor, got {}", op, first.describe());
  return first.dtype();
}

// Every defined tensor must be on the CPU (the CUDA versions have their own entry points).
inline void expect_cpu(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    MOE_CHECK(!t->defined() || t->device() == Device::cpu, ShapeError,
              "{}: {} is on {}, this op runs on cpu", op, t->describe(), device_name(t->device()));
}

// Every defined tensor on one device; true when it is the GPU (the op then calls its CUDA
// kernel, kernels/cuda/ops.h). DeviceError for a GPU tensor in a build without CUDA.
inline bool on_gpu(const char* op, std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts)
    if (t->defined()) {
      if (!first) first = t;
      MOE_CHECK(t->device() == first->device(), ShapeError, "{}: {} is on {}, {} on {}", op, t->describe(),
                device_name(t->device()), first->describe(), device_name(first->device()));
    }
  if (!first || first->device() == Device::cpu) return false;
#ifndef MOE_WITH_CUDA
  throw DeviceError(fmt::format("{}: built without CUDA", op));
#endif
  return true;
}

// A host copy of an index tensor, for validating its values at the boundary (no copy on the CPU).
inline Tensor on_host(const Tensor& t) { return to_host(t); }

// Calls f.template operator()<float>() or <double>() by dtype.
template <class F> void dispatch_real(DType t, F&& f) {
  if (t == DType::f32) std::forward<F>(f).template operator()<float>();
  else std::forward<F>(f).template operator()<double>();
}

}  // namespace moe::ops::detail
