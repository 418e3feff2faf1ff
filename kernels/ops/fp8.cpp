// FP8 entry points (kernels/ops.h): DeepSeek-V3's fine-grained quantisation, the scaled GEMM
// (the CPU's definition, cuBLASLt's block-scaled kernel on an SM90 GPU), BF16 GEMM, and the
// FP8 linear layer composed of them. Kernels in cpu/fp8.cpp, cuda/fp8.cu and cuda/gemm.cu.
#include <algorithm>
#include <atomic>
#include <utility>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/fp8.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {
constexpr std::int64_t kTile = 128;
std::int64_t tiles(std::int64_t n) { return (n + kTile - 1) / kTile; }

// (codes, scales) as the CUDA kernels take them.
std::uint8_t* codes(Tensor& q) { return reinterpret_cast<std::uint8_t*>(q.data<fp8_e4m3>()); }
const std::uint8_t* codes(const Tensor& q) { return reinterpret_cast<const std::uint8_t*>(q.data<fp8_e4m3>()); }

void check_quantize(const char* op, const Tensor& q, const Tensor& scales, const Tensor& x, const Shape& scale_shape) {
  MOE_CHECK(x.ndim() == 2 && x.dtype() == DType::f32, ShapeError, "{}: x {} must be f32 (rows, K)", op, x.describe());
  expect_tensor(op, "q", q, DType::e4m3, x.shape());
  expect_tensor(op, "scales", scales, DType::f32, scale_shape);
}
// x (R,K) with one scale per block of `rows` x 128 (rows 1: activation tiles; 128: weight
// blocks): scales (ceil(R/rows), ceil(K/128)).
void quantize_blocks(const char* op, Tensor& q, Tensor& scales, const Tensor& x, std::int64_t rows, bool pow2) {
  const std::int64_t R = x.ndim() == 2 ? x.size(0) : 0, K = x.ndim() == 2 ? x.size(1) : 0, B = (R + rows - 1) / rows;
  check_quantize(op, q, scales, x, {B, tiles(K)});
  const auto gpu = detail::on_gpu(op, {&x, &q, &scales});
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::quantize(codes(q), scales.data<float>(), x.data<float>(), R, K, static_cast<int>(rows), pow2);
  }
  cpu::quantize(q, scales, x, rows, pow2);
}

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

std::atomic<std::int64_t> g_fp8_fallbacks{0};
}  // namespace

void quantize_1x128(Tensor& q, Tensor& scales, const Tensor& x, bool pow2) {
  quantize_blocks("quantize_1x128", q, scales, x, 1, pow2);
}

void quantize_128x128(Tensor& q, Tensor& scales, const Tensor& w, bool pow2) {
  quantize_blocks("quantize_128x128", q, scales, w, kTile, pow2);
}

void fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb) {
  const char* op = "fp8_gemm";
  const auto [M, N, K, T, rows] = check_fp8_gemm(op, y, qa, sa, qb, sb, true);
  const auto gpu = detail::on_gpu(op, {&y, &qa, &sa, &qb, &sb});
  if (gpu) {
    if constexpr (detail::kCudaBuilt) {
      cuda::fp8_gemm_reference(y.data<float>(), codes(qa), sa.data<float>(), codes(qb), sb.data<float>(), M, N, K,
                               rows);
      return detail::count_gemm(M, N, K);
    }
  }
  cpu::fp8_gemm(y, qa, sa, qb, sb, rows);
}

std::int64_t fp8_reference_fallbacks() { return g_fp8_fallbacks.load(std::memory_order_relaxed); }

void sm90_fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb) {
  const char* op = "sm90_fp8_gemm";
  const auto [M, N, K, T, rows] = check_fp8_gemm(op, y, qa, sa, qb, sb, true);
  const auto gpu = detail::on_gpu(op, {&y, &qa, &sa, &qb, &sb});
  MOE_CHECK(gpu, DeviceError, "{}: a GPU kernel; the CPU has fp8_gemm", op);
  if constexpr (detail::kCudaBuilt) {
    // Where cuBLASLt has no kernel for the pairing or the shape even padded: the reference
    // kernel (exact, one thread per output: slow), counted so that tests and benchmarks see it.
    if (!cuda::sm90_fp8_gemm(y.data<float>(), codes(qa), sa.data<float>(), codes(qb), sb.data<float>(), M, N, K,
                             rows)) {
      g_fp8_fallbacks.fetch_add(1, std::memory_order_relaxed);
      return fp8_gemm(y, qa, sa, qb, sb);
    }
    detail::count_gemm(M, N, K);
  }
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
  if constexpr (detail::kCudaBuilt) {
    const auto bits = [](const Tensor& t) { return reinterpret_cast<const std::uint16_t*>(t.data<bf16>()); };
    cuda::bf16_gemm(ta, tb, M, N, K, bits(a), a.size(1), bits(b), b.size(1), accumulate ? 1.f : 0.f, y.data<float>(),
                    N);
    detail::count_gemm(M, N, K);
  }
}

namespace {
// Helpers of the FP8 linear layer, on the device their input lives on (validated by the
// entry points that call them).
Tensor transposed(const Tensor& a) {  // (R,C) f32 -> (C,R)
  Tensor t = Tensor::empty({a.size(1), a.size(0)}, DType::f32, a.device());
  if (a.device() == Device::cuda) {
    if constexpr (detail::kCudaBuilt) {
      cuda::transpose(t.data<float>(), a.data<float>(), a.size(0), a.size(1));
      return t;
    }
  }
  cpu::transpose(t, a);
  return t;
}
Tensor dequantized(const Tensor& q, const Tensor& s) {  // per 1x128 tile
  Tensor x = Tensor::empty(q.shape(), DType::f32, q.device());
  if (q.device() == Device::cuda) {
    if constexpr (detail::kCudaBuilt) {
      cuda::dequantize_1x128(x.data<float>(), codes(q), s.data<float>(), q.size(0), q.size(1));
      return x;
    }
  }
  cpu::dequantize_1x128(x, q, s);
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
  if (dw.defined()) expect_tensor(op, "dw", dw, DType::f32, w.shape());
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
  if (!dw.defined()) return;  // a frozen weight
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
