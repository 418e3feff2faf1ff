// FP8 formats (OCP / NVIDIA): E4M3 (bias 7, no infinities, max 448, NaN 0x7F) and E5M2 (bias
// 15, IEEE-like, max 57344). Conversion from FP32 rounds to nearest even and saturates to
// the largest finite value (infinities included), NaN stays NaN: what CUDA's
// __nv_cvt_float_to_fp8(x, __NV_SATFINITE, ...) does (tests/kernels/test_fp8.cpp holds the
// two to it). Host code, no CUDA needed.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/dtype.h"

namespace moe {

namespace fp8_detail {
// A sign-magnitude minifloat with E exponent bits, M mantissa bits and the given bias;
// `max_code` is the largest finite magnitude's code, `nan_code` the NaN magnitude.
template <int E, int M, int Bias>
struct Format {
  static constexpr int kMin = 1 - Bias;  // exponent of the smallest normal
  static std::uint8_t encode(float x, std::uint8_t max_code, std::uint8_t nan_code, float max) {
    const std::uint8_t sign = std::signbit(x) ? 0x80 : 0;
    if (std::isnan(x)) return nan_code;  // (CUDA drops the sign of a NaN)
    const float a = std::fabs(x);
    if (a >= max) return sign | max_code;  // saturate (infinities too)
    int e = 0;
    std::frexp(a, &e);
    e -= 1;  // a = 1.f * 2^e
    if (a == 0 || e < kMin) {
      // Subnormal: a multiple of 2^(kMin - M), rounded to nearest even (scaling is exact).
      const auto q = static_cast<std::uint32_t>(std::nearbyint(std::ldexp(a, M - kMin)));
      return sign | static_cast<std::uint8_t>(q);  // q == 2^M is the smallest normal's code
    }
    auto m = static_cast<std::uint32_t>(std::nearbyint((std::ldexp(a, -e) - 1.0f) * float(1 << M)));
    if (m == (1u << M)) m = 0, ++e;  // rounded up to the next power of two
    const std::uint32_t code = (std::uint32_t(e + Bias) << M) | m;
    return sign | static_cast<std::uint8_t>(code > max_code ? max_code : code);
  }
  static float decode(std::uint8_t c, std::uint8_t nan_code, bool has_inf) {
    const float sign = c & 0x80 ? -1.f : 1.f;
    const std::uint32_t mag = c & 0x7f, ef = mag >> M, m = mag & ((1u << M) - 1);
    if (has_inf && ef == (1u << E) - 1) return m ? std::nanf("") : sign * INFINITY;
    if (!has_inf && mag == nan_code) return std::nanf("");
    if (ef == 0) return sign * std::ldexp(float(m), kMin - M);
    return sign * std::ldexp(1.f + float(m) / float(1 << M), int(ef) - Bias);
  }
};
using E4M3 = Format<4, 3, 7>;
using E5M2 = Format<5, 2, 15>;
}  // namespace fp8_detail

inline constexpr float kE4M3Max = 448.f, kE5M2Max = 57344.f;

inline fp8_e4m3 to_e4m3(float x) { return {fp8_detail::E4M3::encode(x, 0x7e, 0x7f, kE4M3Max)}; }
inline float from_e4m3(fp8_e4m3 x) { return fp8_detail::E4M3::decode(x.bits, 0x7f, false); }
inline fp8_e5m2 to_e5m2(float x) { return {fp8_detail::E5M2::encode(x, 0x7b, 0x7f, kE5M2Max)}; }
inline float from_e5m2(fp8_e5m2 x) { return fp8_detail::E5M2::decode(x.bits, 0x7f, true); }

}  // namespace moe
