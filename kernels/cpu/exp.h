// exp for the CPU ops: std::exp for the f64 oracle; for f32 a branch-free version that the
// compiler vectorises (glibc's expf is a scalar call per element and was a fifth of a
// training step). x = n ln2 + r with |r| <= ln2/2, e^r by its degree-7 Taylor polynomial
// (truncation < 2e-8 relative), 2^n through the exponent bits. Inputs are clamped to
// [-87.3, 88]: above, e^88 (1.7e38) instead of overflow; below -87.3 it returns
// ~1e-38 instead of a denormal or 0; callers use it on x - max(x) of softmax rows, where
// such terms vanish in the sum anyway.
#pragma once
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace moe::cpu {

inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.3f), 88.0f);  // 2^n stays a normal float (min/max, not ?:, so it vectorises)
  // Round x / ln2 to the nearest integer with the 1.5 * 2^23 trick (exact for |t| < 2^22).
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;  // ln2 split hi + lo
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const auto bits = static_cast<std::uint32_t>(static_cast<std::int32_t>(n) + 127) << 23;
  return p * std::bit_cast<float>(bits);
}

template <class T>
inline T exp(T x) {
  if constexpr (sizeof(T) == 4) return fast_exp(x);
  else return std::exp(x);
}

}  // namespace moe::cpu
