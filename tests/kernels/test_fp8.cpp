// FP8 (kernels/fp8.h, ops.h): conversions against CUDA's own host conversions (cuda_fp8.h,
// the oracle the issue names), fine-grained quantisation against its definition, and the
// scaled GEMM against an FP64 GEMM of the unquantised inputs within the format's bound.
#include <catch2/catch.hpp>

#include <bit>

#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "kernels/fp8.h"
#include "kernels/fp8_scale_layout.h"
#include "kernels/ops.h"
#include "tests/support/testing.h"

#if __has_include(<cuda_fp8.h>) && __has_include(<cuda_bf16.h>)
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#define MOE_HAVE_CUDA_FP8 1
#endif

using namespace moe;

TEST_CASE("fp8: every code decodes and encodes back to itself", "[kernels][fp8]") {
  for (int c = 0; c < 256; ++c) {
    const auto u = static_cast<std::uint8_t>(c);
    const float a = from_e4m3({u}), b = from_e5m2({u});
    INFO("code " << c);
    if (std::isnan(a)) CHECK((u & 0x7f) == 0x7f);  // E4M3's only NaN: S.1111.111
    else CHECK(to_e4m3(a).bits == u);
    if (std::isnan(b)) CHECK((u & 0x7f) > 0x7c);
    else if (std::isinf(b)) CHECK(to_e5m2(b).bits == (u & 0x80 ? 0xfb : 0x7b));  // saturated
    else CHECK(to_e5m2(b).bits == u);
  }
  CHECK(from_e4m3({0x7e}) == kE4M3Max);
  CHECK(from_e5m2({0x7b}) == kE5M2Max);
  CHECK(from_e4m3({0x01}) == std::ldexp(1.f, -9));  // smallest subnormal
  // Ties go to even: halfway between 1 and 1.125 (mantissa 0 and 1) rounds to 1.
  CHECK(to_e4m3(1.0625f).bits == to_e4m3(1.f).bits);
  CHECK(to_e4m3(1.1875f).bits == to_e4m3(1.25f).bits);
  CHECK(to_e4m3(1e9f).bits == 0x7e);
  CHECK(to_e4m3(-INFINITY).bits == 0xfe);
}

TEST_CASE("fp8: E4M3, E5M2 and BF16 conversions equal CUDA's host conversions (RNE, saturation, NaN)",
          "[kernels][fp8]") {
#ifndef MOE_HAVE_CUDA_FP8
  WARN("cuda_fp8.h not found: the CUDA oracle is skipped");
#else
  std::mt19937 rng(7);
  long mismatches = 0, n = 0;
  auto one = [&](float x) {
    ++n;
    mismatches += to_e4m3(x).bits != __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    mismatches += to_e5m2(x).bits != __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
    const __nv_bfloat16 b = __float2bfloat16_rn(x);  // BF16 (kernels/dtype.h) likewise
    std::uint16_t bits;
    std::memcpy(&bits, &b, 2);
    mismatches += std::isnan(x) ? !std::isnan(from_bf16(to_bf16(x))) : to_bf16(x).bits != bits;
  };
  for (int i = 0; i < 300000; ++i) {
    const std::uint32_t u = rng();
    float x;
    std::memcpy(&x, &u, 4);
    one(x);  // any bit pattern: NaNs, infinities, denormals, huge
    one(std::ldexp(float(std::int32_t(rng())) / 2147483648.f, int(rng() % 48) - 30));  // the formats' range
  }
  // Exact midpoints between neighbouring E4M3 values (the ties) and their neighbours.
  for (int c = 0; c < 0x7e; ++c) {
    const float lo = from_e4m3({std::uint8_t(c)}), hi = from_e4m3({std::uint8_t(c + 1)}), mid = (lo + hi) / 2;
    for (float x : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e9f), -mid}) one(x);
  }
  INFO(mismatches << " of " << 3 * n << " conversions differ");
  CHECK(mismatches == 0);
#endif
}

TEST_CASE("fp8: 1x128 and 128x128 quantisation, zero and denormal tiles, power-of-two scales", "[kernels][fp8]") {
  const std::int64_t M = 3, K = 300;  // tiles of 128, 128, 44
  Tensor x = testing::cast(testing::random({M, K}, 5, 3.0), DType::f32);
  float* xd = x.data<float>();
  for (std::int64_t k = 128; k < 256; ++k) xd[1 * K + k] = 0;     // a zero tile
  for (std::int64_t k = 0; k < 128; ++k) xd[2 * K + k] = 1e-40f;  // a tile of FP32 denormals
  for (const bool pow2 : {false, true}) {
    Tensor q = Tensor::empty({M, K}, DType::e4m3), s = Tensor::empty({M, 3}, DType::f32);
    ops::quantize_1x128(q, s, x, pow2);
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t t = 0; t < 3; ++t) {
        float amax = 0;
        for (std::int64_t k = t * 128; k < std::min(K, (t + 1) * 128); ++k)
          amax = std::max(amax, std::fabs(xd[m * K + k]));
        const float sc = s.data<float>()[m * 3 + t];
        INFO("row " << m << " tile " << t << " pow2 " << pow2);
        if (amax < 1e-30f) {
          CHECK(sc == 1.f);
        } else if (pow2) {
          CHECK(sc >= amax / kE4M3Max);
          CHECK(sc < 2 * amax / kE4M3Max);
          CHECK(std::exp2(std::round(std::log2(sc))) == sc);
        } else {
          CHECK(sc == amax / kE4M3Max);
        }
        for (std::int64_t k = t * 128; k < std::min(K, (t + 1) * 128); ++k) {
          const float back = from_e4m3(q.data<fp8_e4m3>()[m * K + k]) * sc, v = xd[m * K + k];
          // Half an E4M3 ulp (2^-4 relative), or half the subnormal step 2^-10 of the scale.
          CHECK(std::fabs(back - v) <= std::max(std::fabs(v) / 16, sc * std::ldexp(1.f, -10)) + 1e-38f);
        }
      }
  }
  // A 128x128 block shares one scale: the block's amax.
  const std::int64_t N = 130;
  Tensor w = testing::cast(testing::random({N, K}, 6, 0.5), DType::f32);
  w.data<float>()[129 * K + 299] = 40;  // the outlier of block (1, 2)
  Tensor qw = Tensor::empty({N, K}, DType::e4m3), sw = Tensor::empty({2, 3}, DType::f32);
  ops::quantize_128x128(qw, sw, w);
  CHECK(sw.data<float>()[1 * 3 + 2] == 40 / kE4M3Max);
  CHECK(sw.data<float>()[0] <= 0.5f / kE4M3Max);
}

namespace {
// y = x w^T in FP64 from the unquantised values, and the bound of the format on |y - y64|:
// each operand off by half an ulp (2^-4 relative) or half a subnormal step of its scale,
// plus FP32 accumulation.
void check_fp8_gemm(const Tensor& x, const Tensor& w, const Tensor& y, const Tensor& sx, const Tensor& sw, bool rows) {
  const std::int64_t M = x.size(0), N = w.size(0), K = x.size(1), T = sx.size(1);
  const float *xd = x.data<float>(), *wd = w.data<float>();
  double worst = 0;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      double exact = 0, bound = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        const double a = xd[m * K + k], b = wd[n * K + k];
        const double ea = std::max(std::fabs(a) / 16, double(sx.data<float>()[m * T + k / 128]) / 1024);
        const double eb =
            std::max(std::fabs(b) / 16, double(sw.data<float>()[(rows ? n : n / 128) * T + k / 128]) / 1024);
        exact += a * b;
        bound += ea * std::fabs(b) + eb * std::fabs(a) + ea * eb;
      }
      bound = bound * 1.0001 + 1e-6 * std::fabs(exact) + 1e-30;
      const double err = std::fabs(y.data<float>()[m * N + n] - exact);
      INFO("y[" << m << "," << n << "] = " << y.data<float>()[m * N + n] << ", FP64 " << exact << ", bound " << bound);
      REQUIRE(err <= bound);
      worst = std::max(worst, err / bound);
    }
  WARN("fp8_gemm " << M << "x" << N << "x" << K << ": worst error " << worst << " of the bound");
}
}  // namespace

TEST_CASE("fp8: the scaled GEMM against FP64, odd shapes, weights per block or per tile", "[kernels][fp8]") {
  for (const auto& [M, N, K] : {std::array<std::int64_t, 3>{1, 1, 1}, {3, 130, 200}, {17, 5, 384}, {4, 257, 129}}) {
    const Tensor x = testing::cast(testing::random({M, K}, 11 + K, 2.0), DType::f32),
                 w = testing::cast(testing::random({N, K}, 12 + N, 0.1), DType::f32);
    const std::int64_t T = (K + 127) / 128;
    Tensor qx = Tensor::empty({M, K}, DType::e4m3), sx = Tensor::empty({M, T}, DType::f32);
    Tensor qw = Tensor::empty({N, K}, DType::e4m3), sw = Tensor::empty({(N + 127) / 128, T}, DType::f32);
    Tensor sr = Tensor::empty({N, T}, DType::f32), y = Tensor::empty({M, N}, DType::f32);
    ops::quantize_1x128(qx, sx, x);
    ops::quantize_128x128(qw, sw, w);
    ops::fp8_gemm(y, qx, sx, qw, sw);
    check_fp8_gemm(x, w, y, sx, sw, false);
    if (N > 1) {  // the weight gradient's case: both operands per 1x128 tile
      ops::quantize_1x128(qw, sr, w);
      ops::fp8_gemm(y, qx, sx, qw, sr);
      check_fp8_gemm(x, w, y, sx, sr, true);
    }
  }
}

TEST_CASE("fp8: the scaled GEMM is its written definition, bit for bit", "[kernels][fp8]") {
  // The definition in ops.h, spelled out element by element (this file is built without FP
  // contraction, as the kernel is): the CUDA kernel's reference must not depend on how the
  // CPU blocks its sums. Scales of mixed magnitude make the FP32 steps round differently
  // when reordered or fused.
  const std::int64_t M = 9, N = 131, K = 300, T = 3;
  const Tensor x = testing::cast(testing::random({M, K}, 41, 3.0), DType::f32),
               w = testing::cast(testing::random({N, K}, 42, 0.7), DType::f32);
  Tensor qx = Tensor::empty({M, K}, DType::e4m3), sx = Tensor::empty({M, T}, DType::f32);
  Tensor qw = Tensor::empty({N, K}, DType::e4m3), sw = Tensor::empty({2, T}, DType::f32),
         y = Tensor::empty({M, N}, DType::f32);
  ops::quantize_1x128(qx, sx, x);
  ops::quantize_128x128(qw, sw, w);
  ops::fp8_gemm(y, qx, sx, qw, sw);
  std::int64_t mismatches = 0;
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n) {
      float acc = 0;
      for (std::int64_t t = 0; t < T; ++t) {
        double exact = 0;
        for (std::int64_t k = t * 128; k < std::min(K, (t + 1) * 128); ++k)
          exact +=
              double(from_e4m3(qx.data<fp8_e4m3>()[m * K + k])) * double(from_e4m3(qw.data<fp8_e4m3>()[n * K + k]));
        const float scaled = static_cast<float>(exact) * sx.data<float>()[m * T + t];
        acc = acc + scaled * sw.data<float>()[(n / 128) * T + t];
      }
      mismatches += std::bit_cast<std::uint32_t>(acc) != std::bit_cast<std::uint32_t>(y.data<float>()[m * N + n]);
    }
  CHECK(mismatches == 0);
}

TEST_CASE("fp8: an outlier spoils only its own tile under fine-grained scaling", "[kernels][fp8]") {
  // One activation of 1e6 among values of about 1: per tile its 127 neighbours keep their
  // precision (half an ulp, 2^-4 relative); with one scale for the whole row they fall below
  // E4M3's smallest subnormal and vanish.
  const std::int64_t M = 1, N = 8, K = 512;
  Tensor x = testing::cast(testing::random({M, K}, 21, 1.0), DType::f32),
         w = testing::cast(testing::random({N, K}, 22, 1.0), DType::f32);
  x.data<float>()[5] = 1e6f;
  Tensor qx = Tensor::empty({M, K}, DType::e4m3), sx = Tensor::empty({M, 4}, DType::f32);
  Tensor qw = Tensor::empty({N, K}, DType::e4m3), sw = Tensor::empty({1, 4}, DType::f32),
         y = Tensor::empty({M, N}, DType::f32);
  ops::quantize_1x128(qx, sx, x);
  ops::quantize_128x128(qw, sw, w);
  // The error on the tiles without the outlier: their own columns of the product.
  auto tail_error = [&](const Tensor& qa, float scale_of_tail) {
    double worst = 0;
    for (std::int64_t k = 128; k < K; ++k)
      worst =
          std::max(worst, std::fabs(double(from_e4m3(qa.data<fp8_e4m3>()[k])) * scale_of_tail - x.data<float>()[k]));
    return worst;
  };
  const double fine = tail_error(qx, sx.data<float>()[1]);
  // One scale for the row (per-tensor scaling): amax / 448 = 1e6 / 448.
  const float coarse_scale = 1e6f / kE4M3Max;
  Tensor qc = Tensor::empty({M, K}, DType::e4m3);
  for (std::int64_t k = 0; k < K; ++k) qc.data<fp8_e4m3>()[k] = to_e4m3(x.data<float>()[k] / coarse_scale);
  const double coarse = tail_error(qc, coarse_scale);
  WARN("outlier 1e6: worst error on the other tiles " << fine << " per tile, " << coarse << " per row");
  CHECK(fine <= 1.0 / 16);
  CHECK(coarse > 10 * fine);
  ops::fp8_gemm(y, qx, sx, qw, sw);
  check_fp8_gemm(x, w, y, sx, sw, false);
}

TEST_CASE("fp8: linear forward and backward against FP64, within FP8's error", "[kernels][fp8]") {
  // Each product goes through two or three E4M3 roundings (2^-4 relative each), so with
  // random signs the result is off by a few percent of its scale; a missing scale or a
  // transposed operand is off by 100%.
  const std::int64_t M = 40, N = 70, K = 200;
  const Tensor x = testing::cast(testing::random({M, K}, 31, 1.0), DType::f32),
               w = testing::cast(testing::random({N, K}, 32, 0.2), DType::f32),
               dy = testing::cast(testing::random({M, N}, 33, 0.5), DType::f32);
  Tensor y = Tensor::empty({M, N}, DType::f32), qx = Tensor::empty({M, K}, DType::e4m3),
         sx = Tensor::empty({M, 2}, DType::f32), dx = Tensor::empty({M, K}, DType::f32),
         dw = Tensor::zeros({N, K}, DType::f32);
  ops::quantize_1x128(qx, sx, x);
  ops::fp8_linear_forward(y, qx, sx, w);
  ops::fp8_linear_backward(dx, dw, dy, qx, sx, w);
  // FP64 references: y = x w^T, dx = dy w, dw = dy^T x.
  Tensor y64 = Tensor::zeros({M, N}, DType::f64), dx64 = Tensor::zeros({M, K}, DType::f64),
         dw64 = Tensor::zeros({N, K}, DType::f64);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < K; ++k) {
        const double a = x.data<float>()[m * K + k], b = w.data<float>()[n * K + k], d = dy.data<float>()[m * N + n];
        y64.data<double>()[m * N + n] += a * b;
        dx64.data<double>()[m * K + k] += d * b;
        dw64.data<double>()[n * K + k] += d * a;
      }
  const double ey = testing::max_rel_err(testing::cast(y, DType::f64), y64),
               edx = testing::max_rel_err(testing::cast(dx, DType::f64), dx64),
               edw = testing::max_rel_err(testing::cast(dw, DType::f64), dw64);
  WARN("fp8 linear: relative error y " << ey << ", dx " << edx << ", dw " << edw);
  CHECK(ey < 0.05);
  CHECK(edx < 0.05);
  CHECK(edw < 0.08);
  // dw accumulates.
  Tensor dw2 = Tensor::empty({N, K}, DType::f32);
  dw2.copy_from(dw);
  ops::fp8_linear_backward(dx, dw2, dy, qx, sx, w);
  CHECK(testing::max_rel_err(dw2, dw) > 0.5);  // doubled, not overwritten
  // Backward keeps a quarter of x's bytes plus its scales.
  CHECK(qx.nbytes() + sx.nbytes() <= x.nbytes() / 4 + x.nbytes() / 100);
}

// cuBLASLt's scale layouts (kernels/fp8_scale_layout.h), read back element by element: the
// VEC128 scale of (row r, tile t) at t * pad4(R) + r, the BLK128x128 scale of (block b,
// tile t) at b * pad4(T) + t; padding holds 1. Shapes with R and T not multiples of 4 (the
// ones a packed, unpadded stride gets wrong).
TEST_CASE("fp8: scales packed in cuBLASLt's padded layouts", "[fp8]") {
  for (const auto& [rows, tiles] :
       {std::pair<std::int64_t, std::int64_t>{1, 1}, {3, 5}, {5, 3}, {4, 4}, {17, 7}, {64, 9}}) {
    INFO(rows << " rows x " << tiles << " tiles");
    std::vector<float> src(static_cast<std::size_t>(rows * tiles));
    for (std::size_t i = 0; i < src.size(); ++i) src[i] = 2.f + float(i);
    for (const bool vec : {true, false}) {
      const auto p = vec ? fp8_layout::vec128(rows, tiles) : fp8_layout::blk128(rows, tiles);
      CHECK(p.ld % 4 == 0);
      CHECK(p.outer == (vec ? tiles : rows));
      std::vector<float> dst(static_cast<std::size_t>(p.size()), 0.f);
      fp8_layout::pack(dst.data(), src.data(), vec, rows, tiles);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t t = 0; t < tiles; ++t)
          CHECK(dst[std::size_t(vec ? t * p.ld + r : r * p.ld + t)] == src[std::size_t(r * tiles + t)]);
      std::int64_t ones = 0;
      for (float v : dst) ones += v == 1.f;
      CHECK(ones == p.size() - rows * tiles);  // every other entry is padding (the sources are >= 2)
    }
  }
}
