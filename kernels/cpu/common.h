// What the CPU kernels share (internal to kernels/): the dtype dispatch of the real kernels,
// which run in f32 (training) and f64 (the test oracle).
#pragma once
#include <utility>

#include "kernels/dtype.h"

namespace moe::cpu {

// Calls f.template operator()<float>() or <double>() by dtype.
template <class F>
void dispatch_real(DType t, F&& f) {
  if (t == DType::f32) std::forward<F>(f).template operator()<float>();
  else std::forward<F>(f).template operator()<double>();
}

}  // namespace moe::cpu
