// Element types. fp32 is the compute/master type; f64 exists as the oracle precision for tests
// (finite differences); bf16 and the two FP8 formats are storage types for mixed precision.
#pragma once
#include <bit>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace moe {

enum class DType : std::uint8_t { f32, f64, bf16, e4m3, e5m2, i32 };  // i32: token ids, expert indices

// Storage wrappers: distinct types so data<T>() can check the tensor's dtype.
struct bf16 {
  std::uint16_t bits;
};
struct fp8_e4m3 {
  std::uint8_t bits;
};
struct fp8_e5m2 {
  std::uint8_t bits;
};

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
    case DType::i32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::e4m3:
    case DType::e5m2: return 1;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::e4m3: return "fp8_e4m3";
    case DType::e5m2: return "fp8_e5m2";
    case DType::i32: return "i32";
  }
  return "?";
}

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::f32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::f64;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::bf16;
};
template <>
struct dtype_of<fp8_e4m3> {
  static constexpr DType value = DType::e4m3;
};
template <>
struct dtype_of<fp8_e5m2> {
  static constexpr DType value = DType::e5m2;
};
template <>
struct dtype_of<std::int32_t> {
  static constexpr DType value = DType::i32;
};

// FP32 -> BF16 with round-to-nearest-even; NaN stays a (quiet) NaN.
constexpr bf16 to_bf16(float x) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu))
    return bf16{static_cast<std::uint16_t>((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<std::uint16_t>(u >> 16)};
}
constexpr float from_bf16(bf16 x) { return std::bit_cast<float>(std::uint32_t{x.bits} << 16); }

}  // namespace moe
