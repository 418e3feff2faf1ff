#include <algorithm>
#include <bit>
#include <cmath>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {

// Pair i's frequency: theta^(-2i/D), or YaRN's mix of it and it / factor (RopeScaling).
std::vector<double> frequencies(std::int64_t D, double theta, const RopeScaling& y) {
  const std::int64_t half = D / 2;
  std::vector<double> f(static_cast<std::size_t>(half));
  for (std::int64_t i = 0; i < half; ++i) f[std::size_t(i)] = std::pow(theta, -2.0 * double(i) / double(D));
  if (y.factor <= 1) return f;
  // The pair index at which a pair turns `rotations` times within the original context.
  const auto pair_at = [&](double rotations) {
    return double(D) * std::log(double(y.original_positions) / (rotations * 2 * M_PI)) / (2 * std::log(theta));
  };
  const double low = std::max(std::floor(pair_at(y.beta_fast)), 0.0);
  double high = std::min(std::ceil(pair_at(y.beta_slow)), double(D - 1));
  if (low == high) high += 0.001;
  for (std::int64_t i = 0; i < half; ++i) {
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0), keep = 1 - ramp;
    f[std::size_t(i)] = f[std::size_t(i)] / y.factor * (1 - keep) + f[std::size_t(i)] * keep;
  }
  return f;
}

// attention_factor * cos/sin of sign * pos * f_i for every (position, pair), in double
// whatever the dtype is, so f32 and f64 rotate by the same angle; one table serves every
// sequence and head. Built once per (T, D, theta, scaling, sign, dtype, device) and kept on the
// device: a GPU step uploads nothing for RoPE.
struct RopeTable {
  Tensor cos, sin;  // (T, D/2)
};
const RopeTable& rope_table(std::int64_t T, std::int64_t D, double theta, const RopeScaling& y, double sign, DType t,
                            Device dev) {
  using Key = std::tuple<std::int64_t, std::int64_t, double, double, double, double, double, std::int64_t, double,
                         DType, Device>;
  static std::mutex mutex;
  static auto& tables = *new std::map<Key, RopeTable>;  // never destroyed: GPU memory outlives no context
  std::lock_guard lock(mutex);
  auto [it, fresh] = tables.try_emplace(
      Key{T, D, theta, y.factor, y.attention_factor, y.beta_fast, y.beta_slow, y.original_positions, sign, t, dev});
  if (!fresh) return it->second;
  const std::int64_t half = D / 2;
  const std::vector<double> f = frequencies(D, theta, y);
  Tensor cos_t = Tensor::empty({T, half}, t), sin_t = Tensor::empty({T, half}, t);
  cpu::dispatch_real(t, [&]<class R>() {
    R *cs = cos_t.data<R>(), *sn = sin_t.data<R>();
    for (std::int64_t p = 0; p < T; ++p)
      for (std::int64_t i = 0; i < half; ++i) {
        const double ang = sign * static_cast<double>(p) * f[std::size_t(i)];
        cs[p * half + i] = static_cast<R>(y.attention_factor * std::cos(ang));
        sn[p * half + i] = static_cast<R>(y.attention_factor * std::sin(ang));
      }
  });
  it->second = {cos_t.to(dev), sin_t.to(dev)};
  return it->second;
}

// Rotates each pair of every head by sign * pos * theta^(-2i/D); layout as cpu::rope's.
void rope_apply(const char* op, Tensor& y, const Tensor& x, double theta, const RopeScaling& scaling, double sign,
                int layout, const Tensor& positions, std::int64_t first) {
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 4 && x.size(3) % 2 == 0, ShapeError, "{}: x {} must be (B,T,H,D) with D even", op,
            x.describe());
  const std::int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3);
  expect_tensor(op, "y", y, t, x.shape());
  MOE_CHECK(layout == 0 || x.numel() == 0 || !y.same_start(x), ShapeError,
            "{}: interleaved pairs cannot be rotated in place (y must not be x)", op);
  expect_positions(op, positions, B, T, x.device());
  MOE_CHECK(first >= 0 && (first == 0 || !positions.defined()), ShapeError,
            "{}: first position {} (>= 0, and 0 with document positions)", op, first);
  const auto gpu = detail::on_gpu(op, {&y, &x, &positions});
  detail::expect_f32_on_gpu(bool(gpu), op, x);
  MOE_CHECK(scaling.factor >= 1 && scaling.attention_factor > 0 && scaling.beta_fast > 0 && scaling.beta_slow > 0 &&
                scaling.original_positions > 0,
            ShapeError, "{}: RoPE scaling factor {} (>= 1), attention factor {}, betas {} / {}, original positions {}",
            op, scaling.factor, scaling.attention_factor, scaling.beta_fast, scaling.beta_slow,
            scaling.original_positions);
  // One table per power of two of positions (a decode step's `first` grows one at a time);
  // its rows from `first` on are this call's.
  const std::int64_t rows = std::max<std::int64_t>(std::bit_ceil(static_cast<std::uint64_t>(first + T)), 1);
  const RopeTable& table = rope_table(rows, D, theta, scaling, sign, t, x.device());
  const Tensor cos = table.cos.rows(first, T), sin = table.sin.rows(first, T);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::rope(y.data<float>(), x.data<float>(), cos.data<float>(), sin.data<float>(),
                        positions.defined() ? positions.data<std::int32_t>() : nullptr, B, T, H, D, layout);
  }
  cpu::rope(y, x, cos, sin, layout, positions);
}

}  // namespace

void rope_forward(Tensor& y, const Tensor& x, double theta, RopePairs pairs, const RopeScaling& scaling,
                  const Tensor& positions, std::int64_t first) {
  rope_apply("rope_forward", y, x, theta, scaling, +1.0, pairs == RopePairs::interleaved ? 1 : 0, positions, first);
}
void rope_backward(Tensor& dx, const Tensor& dy, double theta, RopePairs pairs, const RopeScaling& scaling,
                   const Tensor& positions, std::int64_t first) {
  rope_apply("rope_backward", dx, dy, theta, scaling, -1.0, pairs == RopePairs::interleaved ? 2 : 0, positions, first);
}

}  // namespace moe::ops
