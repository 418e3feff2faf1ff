// FP8 fine-grained quantisation and the scaled GEMM's definition, the CPU reference. This
// file is built with -ffp-contract=off: the GEMM's FP32 steps are its definition, not to be
// fused.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/kernels.h"
#include "kernels/fp8.h"

namespace moe::cpu {
namespace {
constexpr std::int64_t kTile = 128;
std::int64_t tiles(std::int64_t n) { return (n + kTile - 1) / kTile; }

// amax / 448, or the power of two at or above it; 1 where nothing representable is left to
// scale (an all-zero tile, or one of FP32 denormals, which quantise to zero).
float tile_scale(float amax, bool pow2) {
  float s = amax / kE4M3Max;
  if (!(s >= 1.17549435e-38f)) return 1.f;  // zero, denormal, or NaN amax
  if (pow2) {                               // frexp, not ceil(log2): exact on every float, and the same on the GPU
    int e = 0;
    const float m = std::frexp(s, &e);  // s = m 2^e, m in [0.5, 1)
    s = std::ldexp(1.f, m == 0.5f ? e - 1 : e);
  }
  return s;
}

// Every e4m3 code decoded once.
const std::array<float, 256>& e4m3_table() {
  static const std::array<float, 256> t = [] {
    std::array<float, 256> v{};
    for (int c = 0; c < 256; ++c) v[std::size_t(c)] = from_e4m3({static_cast<std::uint8_t>(c)});
    return v;
  }();
  return t;
}

// Quantises the rows [r0, r1) x columns [c0, c1) of x (.., K) with one scale.
float quantize_block(fp8_e4m3* q, const float* x, std::int64_t K, std::int64_t r0, std::int64_t r1, std::int64_t c0,
                     std::int64_t c1, bool pow2) {
  float amax = 0;
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * K + c]));
  const float s = tile_scale(amax, pow2);
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t c = c0; c < c1; ++c) q[r * K + c] = to_e4m3(x[r * K + c] / s);
  return s;
}

}  // namespace

void quantize(Tensor& q, Tensor& scales, const Tensor& x, std::int64_t rows, bool pow2) {
  const std::int64_t R = x.size(0), K = x.size(1), B = (R + rows - 1) / rows;
  const float* xd = x.data<float>();
  fp8_e4m3* qd = q.data<fp8_e4m3>();
  float* sd = scales.data<float>();
#pragma omp parallel for
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < tiles(K); ++t)
      sd[b * tiles(K) + t] = quantize_block(qd, xd, K, b * rows, std::min(R, (b + 1) * rows), t * kTile,
                                            std::min(K, (t + 1) * kTile), pow2);
}

void fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb, bool b_rows) {
  const std::int64_t M = qa.size(0), N = qb.size(0), K = qa.size(1), T = tiles(K);
  // Products of two E4M3 values have at most 8 significant bits and lie in [2^-18, 2^18):
  // in double, every product and every sum of 128 of them is exact, so a chunk's partial sum
  // does not depend on summation order, and a double GEMM (OpenBLAS, any blocking, FMA or
  // not) computes it bit for bit.
  const auto& dec = e4m3_table();
  auto decoded = [&](const Tensor& q, std::int64_t count) {
    std::vector<double> d(static_cast<std::size_t>(count * K));
    const auto* c = reinterpret_cast<const std::uint8_t*>(q.data<fp8_e4m3>());
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = dec[c[i]];
    return d;
  };
  const std::vector<double> a = decoded(qa, M), b = decoded(qb, N);
  std::vector<double> partial(static_cast<std::size_t>(M * N));
  const float *sad = sa.data<float>(), *sbd = sb.data<float>();
  float* yd = y.data<float>();
  std::fill_n(yd, M * N, 0.f);
  for (std::int64_t t = 0; t < T; ++t) {
    const std::int64_t k0 = t * kTile, kt = std::min(K, k0 + kTile) - k0;
    cpu::gemm<double>(false, true, M, N, kt, a.data() + k0, K, b.data() + k0, K, 0.0, partial.data(), N);
#pragma omp parallel for
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n) {
        const float scaled = static_cast<float>(partial[std::size_t(m * N + n)]) * sad[m * T + t];
        yd[m * N + n] = yd[m * N + n] + scaled * sbd[(b_rows ? n : n / kTile) * T + t];
      }
  }
}

void transpose(Tensor& t, const Tensor& a) {
  const std::int64_t R = a.size(0), C = a.size(1);
  const float* s = a.data<float>();
  float* d = t.data<float>();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < C; ++c) d[c * R + r] = s[r * C + c];
}

void dequantize_1x128(Tensor& x, const Tensor& q, const Tensor& s) {
  const std::int64_t R = q.size(0), C = q.size(1), T = tiles(C);
  const fp8_e4m3* qd = q.data<fp8_e4m3>();
  const float* sd = s.data<float>();
  float* xd = x.data<float>();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < C; ++c) xd[r * C + c] = from_e4m3(qd[r * C + c]) * sd[r * T + c / kTile];
}

}  // namespace moe::cpu
