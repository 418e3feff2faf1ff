// FP8 fine-grained quantisation and the scaled GEMM (ops.h), the CPU reference. This file is
// built with -ffp-contract=off: the GEMM's FP32 steps are its definition, not to be fused.
#include <algorithm>
#include <atomic>
#include <array>
#include <cmath>
#include <utility>
#include <vector>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"
#include "kernels/fp8.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
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

// (codes, scales) as the CUDA kernels take them.
std::uint8_t* codes(Tensor& q) { return reinterpret_cast<std::uint8_t*>(q.data<fp8_e4m3>()); }
const std::uint8_t* codes(const Tensor& q) { return reinterpret_cast<const std::uint8_t*>(q.data<fp8_e4m3>()); }

void check_quantize(const char* op, const Tensor& q, const Tensor& scales, const Tensor& x, const Shape& scale_shape) {
  MOE_CHECK(x.ndim() == 2 && x.dtype() == DType::f32, ShapeError, "{}: x {} must be f32 (rows, K)", op, x.describe());
  expect_tensor(op, "q", q, DType::e4m3, x.shape());
  expect_tensor(op, "scales", scales, DType::f32, scale_shape);
}
}  // namespace

namespace {
// x (R,K) with one scale per block of `rows` x 128 (rows 1: activation tiles; 128: weight
// blocks): scales (ceil(R/rows), ceil(K/128)).
void quantize_blocks(const char* op, Tensor& q, Tensor& scales, const Tensor& x, std::int64_t rows, bool pow2) {
  const std::int64_t R = x.ndim() == 2 ? x.size(0) : 0, K = x.ndim() == 2 ? x.size(1) : 0, B = (R + rows - 1) / rows;
  check_quantize(op, q, scales, x, {B, tiles(K)});
  const auto gpu = detail::on_gpu(op, {&x, &q, &scales});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::quantize(codes(q), scales.data<float>(), x.data<float>(), R, K, static_cast<int>(rows), pow2);
#endif
  }
  const float* xd = x.data<float>();
  fp8_e4m3* qd = q.data<fp8_e4m3>();
  float* sd = scales.data<float>();
#pragma omp parallel for
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t t = 0; t < tiles(K); ++t)
      sd[b * tiles(K) + t] = quantize_block(qd, xd, K, b * rows, std::min(R, (b + 1) * rows), t * kTile,
                                            std::min(K, (t + 1) * kTile), pow2);
}
}  // namespace

void quantize_1x128(Tensor& q, Tensor& scales, const Tensor& x, bool pow2) {
  quantize_blocks("quantize_1x128", q, scales, x, 1, pow2);
}

void quantize_128x128(Tensor& q, Tensor& scales, const Tensor& w, bool pow2) {
  quantize_blocks("quantize_128x128", q, scales, w, kTile, pow2);
}

namespace {
// The shapes of a scaled GEMM's operands, checked: a (M,K), b (N,K) codes, sa (M,T), sb per
// 128x128 block of b (ceil(N/128), T), or per 1x128 tile (N, T) where b_rows is allowed.
struct Fp8Shapes {
  std::int64_t M, N, K, T;
  bool b_rows;
};
Fp8Shapes check_fp8_gemm(const char* op, const Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb,
                         const Tensor& sb, bool allow_b_rows) {
  MOE_CHECK(qa.ndim() == 2 && qb.ndim() == 2 && qa.size(1) == qb.size(1), ShapeError,
            "{}: a {} and b {} must be (M,K) and (N,K)", op, qa.describe(), qb.describe());
  const std::int64_t M = qa.size(0), N = qb.size(0), K = qa.size(1), T = tiles(K);
  expect_tensor(op, "a", qa, DType::e4m3, {M, K});
  expect_tensor(op, "b", qb, DType::e4m3, {N, K});
  expect_tensor(op, "a scales", sa, DType::f32, {M, T});
  const bool rows = allow_b_rows && sb.ndim() == 2 && sb.size(0) == N && N != tiles(N);
  expect_tensor(op, "b scales", sb, DType::f32, {rows ? N : tiles(N), T});
  expect_tensor(op, "y", y, DType::f32, {M, N});
  return {M, N, K, T, rows};
}
}  // namespace

void fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb) {
  const char* op = "fp8_gemm";
  const auto [M, N, K, T, rows] = check_fp8_gemm(op, y, qa, sa, qb, sb, true);
  const auto gpu = detail::on_gpu(op, {&y, &qa, &sa, &qb, &sb});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    cuda::fp8_gemm_reference(y.data<float>(), codes(qa), sa.data<float>(), codes(qb), sb.data<float>(), M, N, K, rows);
    detail::gemm_flop_count.fetch_add(2 * M * N * K, std::memory_order_relaxed);
    return;
#endif
  }
  // Products of two E4M3 values have at most 8 significant bits and lie in [2^-18, 2^18):
  // in double, every product and every sum of 128 of them is exact, so a chunk's partial sum
  // does not depend on summation order, and a double GEMM (OpenBLAS, any blocking, FMA or
  // not) computes it bit for bit.
  const auto& dec = e4m3_table();
  auto decoded = [&](const Tensor& q, std::int64_t rows) {
    std::vector<double> d(static_cast<std::size_t>(rows * K));
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
    detail::gemm<double>(false, true, M, N, kt, a.data() + k0, K, b.data() + k0, K, 0.0, partial.data(), N);
#pragma omp parallel for
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t n = 0; n < N; ++n) {
        const float scaled = static_cast<float>(partial[std::size_t(m * N + n)]) * sad[m * T + t];
        yd[m * N + n] = yd[m * N + n] + scaled * sbd[(rows ? n : n / kTile) * T + t];
      }
  }
}

namespace {
std::atomic<std::int64_t> g_fp8_fallbacks{0};
}  // namespace
std::int64_t fp8_reference_fallbacks() { return g_fp8_fallbacks.load(std::memory_order_relaxed); }

void sm90_fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb) {
  const char* op = "sm90_fp8_gemm";
  const auto [M, N, K, T, rows] = check_fp8_gemm(op, y, qa, sa, qb, sb, true);
  const auto gpu = detail::on_gpu(op, {&y, &qa, &sa, &qb, &sb});
  MOE_CHECK(gpu, DeviceError, "{}: a GPU kernel; the CPU has fp8_gemm", op);
#ifdef MOE_WITH_CUDA
  // Where cuBLASLt has no kernel for the pairing or the shape even padded: the reference
  // kernel (exact, one thread per output: slow), counted so that tests and benchmarks see it.
  if (!cuda::sm90_fp8_gemm(y.data<float>(), codes(qa), sa.data<float>(), codes(qb), sb.data<float>(), M, N, K, rows)) {
    g_fp8_fallbacks.fetch_add(1, std::memory_order_relaxed);
    return fp8_gemm(y, qa, sa, qb, sb);
  }
  detail::gemm_flop_count.fetch_add(2 * M * N * K, std::memory_order_relaxed);
#endif
}

void bf16_gemm(Tensor& y, const Tensor& a, const Tensor& b, bool ta, bool tb, bool accumulate) {
  const char* op = "bf16_gemm";
  MOE_CHECK(a.ndim() == 2 && b.ndim() == 2 && a.dtype() == DType::bf16 && b.dtype() == DType::bf16, ShapeError,
            "{}: a {} and b {} must be bf16 matrices", op, a.describe(), b.describe());
  const std::int64_t M = a.size(ta ? 1 : 0), K = a.size(ta ? 0 : 1), N = b.size(tb ? 0 : 1);
  MOE_CHECK(b.size(tb ? 1 : 0) == K, ShapeError, "{}: op(a) {} and op(b) {} do not chain (ta {}, tb {})", op,
            a.describe(), b.describe(), ta, tb);
  expect_tensor(op, "y", y, DType::f32, {M, N});
  const auto gpu = detail::on_gpu(op, {&y, &a, &b});
  MOE_CHECK(gpu, DeviceError, "{}: a GPU kernel; the CPU rounds to BF16 and runs sgemm", op);
#ifdef MOE_WITH_CUDA
  const auto bits = [](const Tensor& t) { return reinterpret_cast<const std::uint16_t*>(t.data<bf16>()); };
  cuda::bf16_gemm(ta, tb, M, N, K, bits(a), a.size(1), bits(b), b.size(1), accumulate ? 1.f : 0.f, y.data<float>(), N);
  detail::gemm_flop_count.fetch_add(2 * M * N * K, std::memory_order_relaxed);
#endif
}

namespace {
Tensor transposed(const Tensor& a) {  // (R,C) f32 -> (C,R), on a's device
  const std::int64_t R = a.size(0), C = a.size(1);
  Tensor t = Tensor::empty({C, R}, DType::f32, a.device());
#ifdef MOE_WITH_CUDA
  if (a.device() == Device::cuda) {
    cuda::transpose(t.data<float>(), a.data<float>(), R, C);
    return t;
  }
#endif
  const float* s = a.data<float>();
  float* d = t.data<float>();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < C; ++c) d[c * R + r] = s[r * C + c];
  return t;
}
Tensor dequantized(const Tensor& q, const Tensor& s) {  // per 1x128 tile
  const std::int64_t R = q.size(0), C = q.size(1), T = tiles(C);
  Tensor x = Tensor::empty({R, C}, DType::f32, q.device());
#ifdef MOE_WITH_CUDA
  if (q.device() == Device::cuda) {
    cuda::dequantize_1x128(x.data<float>(), codes(q), s.data<float>(), R, C);
    return x;
  }
#endif
  const fp8_e4m3* qd = q.data<fp8_e4m3>();
  const float* sd = s.data<float>();
  float* xd = x.data<float>();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < C; ++c) xd[r * C + c] = from_e4m3(qd[r * C + c]) * sd[r * T + c / kTile];
  return x;
}
// (rows, cols) f32 quantised per 1x128 tile, or per 128x128 block, as (codes, scales).
std::pair<Tensor, Tensor> rows_1x128(const Tensor& a) {
  Tensor q = Tensor::empty(a.shape(), DType::e4m3, a.device()),
         s = Tensor::empty({a.size(0), tiles(a.size(1))}, DType::f32, a.device());
  quantize_1x128(q, s, a);
  return {q, s};
}
std::pair<Tensor, Tensor> blocks_128x128(const Tensor& a) {
  Tensor q = Tensor::empty(a.shape(), DType::e4m3, a.device()),
         s = Tensor::empty({tiles(a.size(0)), tiles(a.size(1))}, DType::f32, a.device());
  quantize_128x128(q, s, a);
  return {q, s};
}
}  // namespace

void fp8_linear_forward(Tensor& y, const Tensor& qx, const Tensor& sx, const Tensor& w, Fp8Path path) {
  MOE_CHECK(w.ndim() == 2 && w.dtype() == DType::f32, ShapeError, "fp8_linear_forward: w {} must be f32 (N,K)",
            w.describe());
  const auto [qw, sw] = blocks_128x128(w);
  (path == Fp8Path::sm90 ? sm90_fp8_gemm : fp8_gemm)(y, qx, sx, qw, sw);
}

void fp8_linear_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& qx, const Tensor& sx, const Tensor& w,
                         std::span<const std::int64_t> segments, Fp8Path path) {
  const char* op = "fp8_linear_backward";
  MOE_CHECK(dy.ndim() == 2 && w.ndim() == 2 && dy.size(1) == w.size(0) && qx.ndim() == 2 && qx.size(0) == dy.size(0) &&
                qx.size(1) == w.size(1),
            ShapeError, "{}: dy {}, x {}, w {} must be (M,N), (M,K), (N,K)", op, dy.describe(), qx.describe(),
            w.describe());
  expect_tensor(op, "dw", dw, DType::f32, w.shape());
  const auto gpu = detail::on_gpu(op, {&dx, &dw, &dy, &qx, &sx, &w});
  const std::int64_t M = dy.size(0);
  MOE_CHECK(segments.empty() || (segments.size() >= 2 && segments.front() == 0 && segments.back() == M &&
                                 std::is_sorted(segments.begin(), segments.end())),
            ShapeError, "{}: segments must rise from 0 to the {} rows", op, M);
  if (dx.defined()) {
    const auto [qdy, sdy] = rows_1x128(dy);
    const auto [qwt, swt] = blocks_128x128(transposed(w));  // (K,N): its 128x128 blocks are w's
    (path == Fp8Path::sm90 ? sm90_fp8_gemm : fp8_gemm)(dx, qdy, sdy, qwt, swt);
  }
  const Tensor x = dequantized(qx, sx);
  const std::int64_t whole[] = {0, M};
  const auto seg = segments.empty() ? std::span<const std::int64_t>(whole) : segments;
  Tensor g = Tensor::empty(w.shape(), DType::f32, dw.device());
  for (std::size_t i = 0; i + 1 < seg.size(); ++i) {
    const std::int64_t r0 = seg[i], n = seg[i + 1] - r0;
    if (n == 0) continue;
    const auto [qdyt, sdyt] = rows_1x128(transposed(dy.rows(r0, n)));  // (N,n) along M
    const auto [qxt, sxt] = rows_1x128(transposed(x.rows(r0, n)));     // (K,n) along M
    (path == Fp8Path::sm90 ? sm90_fp8_gemm : fp8_gemm)(g, qdyt, sdyt, qxt, sxt);
    accumulate(dw, g);
  }
}

}  // namespace moe::ops
