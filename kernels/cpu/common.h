// Shared boundary checks and dtype dispatch for the CPU reference ops (internal header).
#pragma once
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

// Calls f.template operator()<float>() or <double>() by dtype.
template <class F> void dispatch_real(DType t, F&& f) {
  if (t == DType::f32) std::forward<F>(f).template operator()<float>();
  else std::forward<F>(f).template operator()<double>();
}

}  // namespace moe::ops::detail
