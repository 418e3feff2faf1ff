// gpu-labelled: CUDA ops against the CPU reference. Without a GPU (or a CUDA build) the
// program prints why and exits 77, which ctest reports as "Skipped".
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <iostream>
#include <tuple>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("cuda swiglu_forward matches the CPU reference within 2 ulp-ish (1e-6 relative)", "[gpu][swiglu]") {
  for (std::int64_t n : {1, 255, 256, 257, 1 << 20}) {
    Tensor g = random({n}, 1, 6, DType::f32), u = random({n}, 2, 1, DType::f32), ref = Tensor::empty({n}, DType::f32);
    ops::swiglu_forward(ref, g, u);
    Tensor gd = g.to(Device::cuda), ud = u.to(Device::cuda), hd = Tensor::empty({n}, DType::f32, Device::cuda);
    ops::swiglu_forward(hd, gd, ud);
    CHECK(max_rel_err(hd.to(Device::cpu), ref) < 1e-6);
  }
}

TEST_CASE("cuda tensors round-trip through device memory", "[gpu][tensor]") {
  Tensor a = random({3, 1000}, 3, 1, DType::f32);
  Tensor back = a.to(Device::cuda).to(Device::cpu);
  CHECK(max_rel_err(back, a) == 0.0);
}

namespace {
// Bitwise equality of two tensors' bytes (the GPU one brought back).
bool same_bits(const Tensor& gpu, const Tensor& cpu) {
  const Tensor back = gpu.to(Device::cpu);
  return back.nbytes() == cpu.nbytes() && std::memcmp(back.raw(), cpu.raw(), cpu.nbytes()) == 0;
}
// Values of every kind a tile meets: ordinary, an outlier, zeros, FP32 denormals.
Tensor awkward(Shape shape, std::uint64_t seed) {
  Tensor x = random(shape, seed, 3, DType::f32);
  float* d = x.data<float>();
  const std::int64_t n = x.numel();
  d[0] = 1e6f;
  for (std::int64_t i = 1; i < n && i < 300; ++i) d[i] = 0.f;  // a zero tile (with K <= 299)
  if (n > 400) d[n - 1] = 1e-40f, d[n - 2] = -3e-39f;          // denormals
  return x;
}
}  // namespace

TEST_CASE("cuda FP8 quantisation is the CPU's bit for bit", "[gpu][fp8]") {
  for (const auto& [R, K] : {std::array<std::int64_t, 2>{1, 1}, {3, 299}, {130, 200}, {257, 384}})
    for (bool pow2 : {false, true}) {
      INFO(R << "x" << K << (pow2 ? " pow2" : ""));
      const Tensor x = awkward({R, K}, std::uint64_t(R * 1000 + K));
      const std::int64_t T = (K + 127) / 128, B = (R + 127) / 128;
      Tensor q = Tensor::empty({R, K}, DType::e4m3), s = Tensor::empty({R, T}, DType::f32);
      Tensor qb = Tensor::empty({R, K}, DType::e4m3), sb = Tensor::empty({B, T}, DType::f32);
      ops::quantize_1x128(q, s, x, pow2);
      ops::quantize_128x128(qb, sb, x, pow2);
      const Tensor xd = x.to(Device::cuda);
      Tensor qd = Tensor::empty({R, K}, DType::e4m3, Device::cuda),
             sd = Tensor::empty({R, T}, DType::f32, Device::cuda);
      Tensor qbd = Tensor::empty({R, K}, DType::e4m3, Device::cuda),
             sbd = Tensor::empty({B, T}, DType::f32, Device::cuda);
      ops::quantize_1x128(qd, sd, xd, pow2);
      ops::quantize_128x128(qbd, sbd, xd, pow2);
      CHECK(same_bits(qd, q));
      CHECK(same_bits(sd, s));
      CHECK(same_bits(qbd, qb));
      CHECK(same_bits(sbd, sb));
    }
}

TEST_CASE("cuda FP8 scaled GEMM reference and FP8 linear forward and backward are the CPU's bit for bit",
          "[gpu][fp8]") {
  for (const auto& [M, N, K] : {std::array<std::int64_t, 3>{1, 1, 1}, {9, 131, 300}, {64, 256, 512}}) {
    INFO(M << "x" << N << "x" << K);
    const Tensor x = random({M, K}, 5, 2, DType::f32), w = random({N, K}, 6, 0.1, DType::f32);
    const std::int64_t T = (K + 127) / 128;
    Tensor qx = Tensor::empty({M, K}, DType::e4m3), sx = Tensor::empty({M, T}, DType::f32),
           y = Tensor::empty({M, N}, DType::f32);
    ops::quantize_1x128(qx, sx, x);
    ops::fp8_linear_forward(y, qx, sx, w);
    const Tensor qxd = qx.to(Device::cuda), sxd = sx.to(Device::cuda), wd = w.to(Device::cuda);
    Tensor yd = Tensor::empty({M, N}, DType::f32, Device::cuda);
    ops::fp8_linear_forward(yd, qxd, sxd, wd);  // quantises w per block on the GPU, then the reference GEMM
    CHECK(same_bits(yd, y));
    // Backward: transposes, dequantisation and requantisation along M on the GPU, with two
    // wgrad segments (as an expert's rows from two source ranks).
    const Tensor dy = random({M, N}, 7, 1, DType::f32), dw0 = random({N, K}, 8, 0.1, DType::f32);
    const std::vector<std::int64_t> segments = {0, M / 2, M};
    Tensor dx = Tensor::empty({M, K}, DType::f32), dw = Tensor::empty({N, K}, DType::f32);
    dw.copy_from(dw0);
    ops::fp8_linear_backward(dx, dw, dy, qx, sx, w, segments);
    Tensor dxd = Tensor::empty({M, K}, DType::f32, Device::cuda), dwd = dw0.to(Device::cuda);
    ops::fp8_linear_backward(dxd, dwd, dy.to(Device::cuda), qxd, sxd, wd, segments);
    CHECK(same_bits(dxd, dx));
    CHECK(same_bits(dwd, dw));
  }
}

namespace {
// ||a - b|| / ||b|| of two f32 tensors, brought to the CPU.
double norm_err(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu), y = b.to(Device::cpu);
  double d = 0, n = 0;
  for (std::int64_t i = 0; i < y.numel(); ++i) {
    const double e = double(x.data<float>()[i]) - y.data<float>()[i];
    d += e * e, n += double(y.data<float>()[i]) * y.data<float>()[i];
  }
  return std::sqrt(d / std::max(n, 1e-300));
}
}  // namespace

TEST_CASE("cuda AdamW, RMSNorm, embedding, RoPE, SwiGLU backward, elementwise helpers and cross-entropy match the CPU",
          "[gpu][ops]") {
  auto gpu = [](const Tensor& t) { return t.to(Device::cuda); };
  const std::int64_t N = 37, C = 300, V = 1000;
  SECTION("adamw: the same f32 formula (FMA contraction aside)") {
    Tensor p = random({N, C}, 1, 1, DType::f32), m = random({N, C}, 2, 0.1, DType::f32),
           v = random({N, C}, 3, 0.1, DType::f32);
    for (std::int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = std::fabs(v.data<float>()[i]);
    const Tensor g = random({N, C}, 4, 1, DType::f32);
    Tensor pd = gpu(p), md = gpu(m), vd = gpu(v);
    const ops::AdamWSpec spec{.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .step = 7};
    ops::adamw_step(p, m, v, g, spec);
    ops::adamw_step(pd, md, vd, gpu(g), spec);
    CHECK(max_rel_err(pd.to(Device::cpu), p) < 1e-6);
    CHECK(max_rel_err(md.to(Device::cpu), m) < 1e-6);
    CHECK(max_rel_err(vd.to(Device::cpu), v) < 1e-6);
  }
  SECTION("rmsnorm forward and backward") {
    const Tensor x = random({N, C}, 5, 2, DType::f32), w = random({C}, 6, 1, DType::f32),
                 dy = random({N, C}, 7, 1, DType::f32);
    Tensor y = Tensor::empty({N, C}, DType::f32), r = Tensor::empty({N}, DType::f32),
           dx = Tensor::empty({N, C}, DType::f32), dw = Tensor::zeros({C}, DType::f32);
    ops::rmsnorm_forward(y, r, x, w, 1e-6);
    ops::rmsnorm_backward(dx, dw, dy, x, w, r);
    Tensor yd = Tensor::empty({N, C}, DType::f32, Device::cuda), rd = Tensor::empty({N}, DType::f32, Device::cuda),
           dxd = Tensor::empty({N, C}, DType::f32, Device::cuda), dwd = Tensor::zeros({C}, DType::f32, Device::cuda);
    ops::rmsnorm_forward(yd, rd, gpu(x), gpu(w), 1e-6);
    ops::rmsnorm_backward(dxd, dwd, gpu(dy), gpu(x), gpu(w), rd);
    CHECK(norm_err(yd, y) < 1e-6);
    CHECK(norm_err(rd, r) < 1e-6);
    CHECK(norm_err(dxd, dx) < 1e-5);
    CHECK(norm_err(dwd, dw) < 1e-5);
  }
  SECTION("embedding forward and backward (repeated and sharded-out tokens)") {
    Tensor tok = random_ints({N}, 8, 0, V - 1);
    tok.data<std::int32_t>()[3] = tok.data<std::int32_t>()[4];
    tok.data<std::int32_t>()[5] = -1;
    const Tensor table = random({V, C}, 9, 1, DType::f32), dout = random({N, C}, 10, 1, DType::f32);
    Tensor out = Tensor::empty({N, C}, DType::f32), dt = Tensor::zeros({V, C}, DType::f32);
    ops::embedding_forward(out, tok, table, true);
    ops::embedding_backward(dt, dout, tok, true);
    Tensor outd = Tensor::empty({N, C}, DType::f32, Device::cuda),
           dtd = Tensor::zeros({V, C}, DType::f32, Device::cuda);
    ops::embedding_forward(outd, gpu(tok), gpu(table), true);
    ops::embedding_backward(dtd, gpu(dout), gpu(tok), true);
    CHECK(same_bits(outd, out));
    CHECK(same_bits(dtd, dt));  // the same adds in the same order
  }
  SECTION("rope forward and backward (in place too)") {
    const std::int64_t B = 2, T = 9, H = 3, D = 16;
    const Tensor x = random({B, T, H, D}, 14, 1, DType::f32);
    Tensor y = Tensor::empty(x.shape(), DType::f32), back = Tensor::empty(x.shape(), DType::f32);
    ops::rope_forward(y, x, 10000.0);
    ops::rope_backward(back, y, 10000.0);
    Tensor yd = Tensor::empty(x.shape(), DType::f32, Device::cuda), xd = gpu(x);
    ops::rope_forward(yd, xd, 10000.0);
    CHECK(norm_err(yd, y) < 1e-6);
    ops::rope_backward(yd, yd, 10000.0);  // aliased, as the attention layer calls it
    CHECK(norm_err(yd, back) < 1e-6);
  }
  SECTION("swiglu backward") {
    const Tensor g = random({N, C}, 15, 4, DType::f32), u = random({N, C}, 16, 1, DType::f32),
                 dh = random({N, C}, 17, 1, DType::f32);
    Tensor dg = Tensor::empty({N, C}, DType::f32), du = Tensor::empty({N, C}, DType::f32);
    ops::swiglu_backward(dg, du, dh, g, u);
    Tensor dgd = Tensor::empty({N, C}, DType::f32, Device::cuda), dud = Tensor::empty({N, C}, DType::f32, Device::cuda);
    ops::swiglu_backward(dgd, dud, gpu(dh), gpu(g), gpu(u));
    CHECK(norm_err(dgd, dg) < 1e-6);
    CHECK(norm_err(dud, du) < 1e-6);
  }
  SECTION("accumulate, scale, sum of squares, BF16 conversion") {
    const Tensor x = random({N, C}, 18, 1, DType::f32), y0 = random({N, C}, 19, 1, DType::f32);
    Tensor y = Tensor::empty({N, C}, DType::f32);
    y.copy_from(y0);
    Tensor yd = gpu(y0);
    ops::accumulate(y, x, -0.5);
    ops::scale(y, 3.0);
    ops::accumulate(yd, gpu(x), -0.5);
    ops::scale(yd, 3.0);
    CHECK(norm_err(yd, y) < 1e-6);
    CHECK(ops::sum_squares(yd) == Approx(ops::sum_squares(y)).epsilon(1e-12));
    Tensor b = Tensor::empty({N, C}, DType::bf16), bd = Tensor::empty({N, C}, DType::bf16, Device::cuda);
    ops::convert(b, x);
    ops::convert(bd, gpu(x));
    CHECK(same_bits(bd, b));  // round to nearest even on both
    Tensor back = Tensor::empty({N, C}, DType::f32, Device::cuda), back_cpu = Tensor::empty({N, C}, DType::f32);
    ops::convert(back, bd);
    ops::convert(back_cpu, b);
    CHECK(same_bits(back, back_cpu));
  }
  SECTION("cross-entropy forward and backward (an ignored row)") {
    Tensor tg = random_ints({N}, 11, 0, V - 1);
    tg.data<std::int32_t>()[2] = -1;
    const Tensor logits = random({N, V}, 12, 3, DType::f32), dl = random({N}, 13, 1, DType::f32);
    Tensor loss = Tensor::empty({N}, DType::f32), dlog = Tensor::empty({N, V}, DType::f32);
    ops::cross_entropy_forward(loss, logits, tg);
    ops::cross_entropy_backward(dlog, dl, logits, tg);
    Tensor lossd = Tensor::empty({N}, DType::f32, Device::cuda),
           dlogd = Tensor::empty({N, V}, DType::f32, Device::cuda);
    ops::cross_entropy_forward(lossd, gpu(logits), gpu(tg));
    ops::cross_entropy_backward(dlogd, gpu(dl), gpu(logits), gpu(tg));
    CHECK(norm_err(lossd, loss) < 1e-6);
    CHECK(norm_err(dlogd, dlog) < 1e-5);
  }
}

TEST_CASE("cuda sum_into is the CPU's running sum bit for bit", "[gpu][ops]") {
  const Tensor x = random({4099}, 3, 5.0, DType::f32);
  Tensor cpu = Tensor::zeros({1}, DType::f64), gpu = Tensor::zeros({1}, DType::f64, Device::cuda);
  ops::sum_into(cpu, x);
  ops::sum_into(gpu, x.to(Device::cuda));
  CHECK(to_host(gpu).data<double>()[0] == cpu.data<double>()[0]);
}

TEST_CASE("cuda FP32 matmul and grouped matmul (cuBLASLt, no TF32) match OpenBLAS", "[gpu][gemm]") {
  auto gpu = [](const Tensor& t) { return t.to(Device::cuda); };
  const std::int64_t M = 70, N = 48, K = 96;
  const std::vector<std::int64_t> offsets = {0, 13, 13, 70};  // an empty group too
  const Tensor x = random({M, K}, 20, 1, DType::f32), w = random({3, N, K}, 21, 0.2, DType::f32),
               dy = random({M, N}, 22, 1, DType::f32), dw0 = random({3, N, K}, 23, 0.1, DType::f32);
  Tensor y = Tensor::empty({M, N}, DType::f32), dx = Tensor::empty({M, K}, DType::f32),
         dw = Tensor::empty({3, N, K}, DType::f32);
  dw.copy_from(dw0);  // backward accumulates into what is there
  ops::grouped_matmul_forward(y, x, w, offsets);
  ops::grouped_matmul_backward(dx, dw, dy, x, w, offsets);
  Tensor yd = Tensor::empty({M, N}, DType::f32, Device::cuda), dxd = Tensor::empty({M, K}, DType::f32, Device::cuda),
         dwd = gpu(dw0);
  ops::grouped_matmul_forward(yd, gpu(x), gpu(w), offsets);
  ops::grouped_matmul_backward(dxd, dwd, gpu(dy), gpu(x), gpu(w), offsets);
  CHECK(norm_err(yd, y) < 1e-6);  // TF32 would be off by about 1e-3
  CHECK(norm_err(dxd, dx) < 1e-6);
  CHECK(norm_err(dwd, dw) < 1e-6);
  Tensor y2 = Tensor::empty({M, N}, DType::f32), y2d = Tensor::empty({M, N}, DType::f32, Device::cuda);
  const Tensor w2 = w.rows(0, 1).view({N, K});
  ops::matmul_forward(y2, x, w2);
  ops::matmul_forward(y2d, gpu(x), gpu(w2));
  CHECK(norm_err(y2d, y2) < 1e-6);
}

TEST_CASE("cuda sm90_fp8_gemm (cuBLASLt block scaling) matches the reference GEMM", "[gpu][fp8][gemm]") {
  // Tensor cores sum a 128-chunk in their own order and width before the FP32 promotion, so
  // the two agree to accumulation order (about 2^-13 of a chunk's magnitude), not bitwise; a
  // scale applied to the wrong tile or block is off by orders of magnitude more. Shapes with
  // K/128 not a multiple of 4 (the padded stride of the 128x128 scales) and M not a multiple
  // of 4 or 16 (the padded 1x128 scales; a per-expert row count) are among them, and no
  // 128x128 call may fall back to the reference kernel (ops::fp8_reference_fallbacks).
  const std::int64_t fallbacks0 = ops::fp8_reference_fallbacks();
  std::int64_t pair_fallbacks = 0;
  for (const auto& [M, N, K] : {std::array<std::int64_t, 3>{128, 128, 128},
                                {256, 512, 1024},
                                {384, 1024, 2048},
                                {37, 256, 640},
                                {100, 384, 384},
                                {16, 128, 1152},
                                {3, 704, 1024}}) {
    INFO(M << "x" << N << "x" << K);
    const std::int64_t T = (K + 127) / 128;
    Tensor x = random({M, K}, 7, 2, DType::f32), w = random({N, K}, 8, 0.05, DType::f32);
    for (std::int64_t k = 0; k < K; k += 257) x.data<float>()[k] = 300.f;  // tiles of very different scales
    const Tensor xd = x.to(Device::cuda), wd = w.to(Device::cuda);
    Tensor qx = Tensor::empty({M, K}, DType::e4m3, Device::cuda), sx = Tensor::empty({M, T}, DType::f32, Device::cuda);
    Tensor qw = Tensor::empty({N, K}, DType::e4m3, Device::cuda),
           sw = Tensor::empty({(N + 127) / 128, T}, DType::f32, Device::cuda);
    ops::quantize_1x128(qx, sx, xd);
    ops::quantize_128x128(qw, sw, wd);
    Tensor ref = Tensor::empty({M, N}, DType::f32, Device::cuda),
           fast = Tensor::empty({M, N}, DType::f32, Device::cuda);
    ops::fp8_gemm(ref, qx, sx, qw, sw);
    const std::int64_t before = ops::fp8_reference_fallbacks();
    ops::sm90_fp8_gemm(fast, qx, sx, qw, sw);
    CHECK(ops::fp8_reference_fallbacks() == before);
    const double e = norm_err(fast, ref);
    WARN("sm90_fp8_gemm " << M << "x" << N << "x" << K << ": " << e << " of the reference's norm");
    CHECK(e < 2e-3);
    // A weight gradient's pairing: b per 1x128 tile too (cuBLASLt's kernel, or the reference
    // when it has none: the WARN says which by the error).
    Tensor qt = Tensor::empty({N, K}, DType::e4m3, Device::cuda), st = Tensor::empty({N, T}, DType::f32, Device::cuda);
    ops::quantize_1x128(qt, st, wd);
    ops::fp8_gemm(ref, qx, sx, qt, st);
    const std::int64_t pair_before = ops::fp8_reference_fallbacks();
    ops::sm90_fp8_gemm(fast, qx, sx, qt, st);
    const bool fell_back = ops::fp8_reference_fallbacks() != pair_before;
    pair_fallbacks += fell_back;
    const double er = norm_err(fast, ref);
    WARN("sm90_fp8_gemm 1x128 x 1x128 " << M << "x" << N << "x" << K << ": " << er
                                        << (fell_back ? " (the reference ran)" : ""));
    CHECK(er < 2e-3);
  }
  WARN("sm90_fp8_gemm reference fallbacks: " << ops::fp8_reference_fallbacks() - fallbacks0 << " (" << pair_fallbacks
                                             << " of them 1x128 x 1x128)");
}

TEST_CASE("cuda bf16_gemm (cuBLASLt) matches the CPU on the same BF16 operands, in a linear's three forms",
          "[gpu][gemm]") {
  const std::int64_t M = 256, N = 384, K = 512;
  const auto rounded = [](const Tensor& x, Tensor& bits) {  // (bf16 bits, their exact f32 values)
    bits = Tensor::empty(x.shape(), DType::bf16);
    ops::convert(bits, x);
    Tensor r = Tensor::empty(x.shape(), DType::f32);
    ops::convert(r, bits);
    return r;
  };
  Tensor xb, wb, dyb;
  const Tensor xr = rounded(random({M, K}, 9, 1, DType::f32), xb),
               wr = rounded(random({N, K}, 10, 0.1, DType::f32), wb),
               dyr = rounded(random({M, N}, 11, 1, DType::f32), dyb), dw0 = random({N, K}, 12, 1, DType::f32);
  // The CPU on the same BF16 values in FP32: y = x w^T; dx = dy w; dw = dw0 + dy^T x.
  Tensor y = Tensor::empty({M, N}, DType::f32), dx = Tensor::empty({M, K}, DType::f32),
         dw = Tensor::empty({N, K}, DType::f32);
  dw.copy_from(dw0);
  ops::matmul_forward(y, xr, wr);
  ops::matmul_backward(dx, dw, dyr, xr, wr);
  const Tensor xd = xb.to(Device::cuda), wd = wb.to(Device::cuda), dyd = dyb.to(Device::cuda);
  Tensor yg = Tensor::empty({M, N}, DType::f32, Device::cuda), dxg = Tensor::empty({M, K}, DType::f32, Device::cuda),
         dwg = dw0.to(Device::cuda);
  ops::bf16_gemm(yg, xd, wd);
  ops::bf16_gemm(dxg, dyd, wd, false, false);
  ops::bf16_gemm(dwg, dyd, xd, true, false, true);
  CHECK(norm_err(yg, y) < 1e-5);
  CHECK(norm_err(dxg, dx) < 1e-5);
  CHECK(norm_err(dwg, dw) < 1e-5);
}

TEST_CASE("cuda gather_rows, combine_rows and row_dot are the CPU's (sums bit for bit)", "[gpu][rows]") {
  const std::int64_t N = 300, C = 515, M = 200, W = 4;
  const Tensor in = random({N, C}, 21, 2, DType::f32), w = random({M, W}, 22, 1, DType::f32),
               base = random({M, C}, 23, 1, DType::f32);
  Tensor q = Tensor::empty({N, C}, DType::e4m3), s = Tensor::empty({N, 5}, DType::f32);
  ops::quantize_1x128(q, s, in);
  std::vector<std::int32_t> slots;
  for (std::int32_t j = 0; j < M * W; ++j) slots.push_back(j % 3 == 1 ? -1 : (j * 7 + j / 5) % std::int32_t(N));
  const Tensor slot = ints(slots, {M, W}),
               rows = ints(std::vector<std::int32_t>(slots.begin(), slots.begin() + M), {M});
  const Tensor slot_d = slot.to(Device::cuda), rows_d = rows.to(Device::cuda);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&in, &q}) {
    Tensor ref = Tensor::empty({M, C}, t->dtype()), got = Tensor::empty({M, C}, t->dtype(), Device::cuda);
    ops::gather_rows(ref, *t, rows);
    ops::gather_rows(got, t->to(Device::cuda), rows_d);
    CHECK(same_bits(got, ref));
  }
  const Tensor ind = in.to(Device::cuda), wd = w.to(Device::cuda);
  for (bool weighted : {false, true})
    for (bool accumulate : {false, true}) {
      INFO((weighted ? "weighted" : "plain") << (accumulate ? " accumulate" : ""));
      Tensor ref = Tensor::empty({M, C}, DType::f32);
      ref.copy_from(base);
      Tensor got = base.to(Device::cuda);
      ops::combine_rows(ref, in, slot, weighted ? w : Tensor(), accumulate);
      ops::combine_rows(got, ind, slot_d, weighted ? wd : Tensor(), accumulate);
      CHECK(same_bits(got, ref));
    }
  std::vector<std::int32_t> valid;
  for (auto v : slots)
    if (v >= 0 && std::ssize(valid) < M) valid.push_back(v);
  const Tensor a_rows = ints(valid, {M});
  Tensor ref = Tensor::empty({M}, DType::f32), got = Tensor::empty({M}, DType::f32, Device::cuda);
  ops::row_dot(ref, in, a_rows, in.rows(0, M));
  ops::row_dot(got, ind, a_rows.to(Device::cuda), ind.rows(0, M));
  CHECK(max_rel_err(got.to(Device::cpu), ref) < 1e-7);
}

TEST_CASE("cuda dispatch-plan ops and the balance loss are the CPU's bit for bit", "[gpu][routing]") {
  // A routing of the model's size: 4096 tokens, top-8 of 64 experts on 8 ranks, capacity 1.1.
  const std::int64_t N = 4096, K = 8, E = 64, P = 8, El = E / P, T = 1024;
  std::vector<std::int32_t> choice(static_cast<std::size_t>(N * K));
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t k = 0; k < K; ++k)
      choice[std::size_t(n * K + k)] = static_cast<std::int32_t>((n * 13 + k * (7 + n % 5)) % E);
  const Tensor index = ints(choice, {N, K}), index_d = index.to(Device::cuda);
  auto both = [](const Tensor& cpu, const Tensor& gpu) { return same_bits(gpu, cpu); };
  Tensor kept = Tensor::empty({N, K}, DType::i32), counts = Tensor::empty({2, E}, DType::i32);
  Tensor kept_d = Tensor::empty({N, K}, DType::i32, Device::cuda),
         counts_d = Tensor::empty({2, E}, DType::i32, Device::cuda);
  ops::route_capacity(kept, counts, index, 563, 100, 3000);
  ops::route_capacity(kept_d, counts_d, index_d, 563, 100, 3000);
  CHECK(both(kept, kept_d));
  CHECK(both(counts, counts_d));
  Tensor pairs = Tensor::empty({N, P}, DType::i32), fan = Tensor::empty({1}, DType::i32);
  Tensor pairs_d = Tensor::empty({N, P}, DType::i32, Device::cuda),
         fan_d = Tensor::empty({1}, DType::i32, Device::cuda);
  ops::route_pairs(pairs, fan, kept, El);
  ops::route_pairs(pairs_d, fan_d, kept_d, El);
  CHECK(both(pairs, pairs_d));
  CHECK(both(fan, fan_d));
  Tensor rows = Tensor::empty({N * P}, DType::i32), send = Tensor::empty({P}, DType::i32);
  Tensor rows_d = Tensor::empty({N * P}, DType::i32, Device::cuda),
         send_d = Tensor::empty({P}, DType::i32, Device::cuda);
  ops::counting_sort(rows, send, pairs.view({N * P}), P);
  ops::counting_sort(rows_d, send_d, pairs_d.view({N * P}), P);
  CHECK(both(rows, rows_d));
  CHECK(both(send, send_d));
  std::int64_t S = 0;
  for (std::int64_t j = 0; j < P; ++j) S += send.data<std::int32_t>()[j];
  Tensor token = Tensor::empty({S}, DType::i32), token_d = Tensor::empty({S}, DType::i32, Device::cuda);
  ops::invert_positions(token, rows, P);
  ops::invert_positions(token_d, rows_d, P);
  CHECK(both(token, token_d));
  Tensor ex = Tensor::empty({S, K}, DType::i32), as = Tensor::empty({S * K}, DType::i32);
  Tensor ex_d = Tensor::empty({S, K}, DType::i32, Device::cuda),
         as_d = Tensor::empty({S * K}, DType::i32, Device::cuda);
  ops::dispatch_slots(ex, as, kept, rows.view({N, P}), El);
  ops::dispatch_slots(ex_d, as_d, kept_d, rows_d.view({N, P}), El);
  CHECK(both(ex, ex_d));
  CHECK(both(as, as_d));

  Tensor scores = random({N, E}, 31, 0.45, DType::f32);
  for (std::int64_t i = 0; i < N * E; ++i) scores.data<float>()[i] += 0.5f;
  const Tensor scores_d = scores.to(Device::cuda);
  Tensor total = Tensor::zeros({1}, DType::f64), f = Tensor::empty({N / T, E}, DType::f64);
  Tensor total_d = total.to(Device::cuda), f_d = f.to(Device::cuda);
  ops::balance_loss_forward(total, f, scores, index, T, 0.01);
  ops::balance_loss_forward(total_d, f_d, scores_d, index_d, T, 0.01);
  CHECK(both(total, total_d));
  CHECK(both(f, f_d));
  Tensor ds = Tensor::empty({N, E}, DType::f32), ds_d = Tensor::empty({N, E}, DType::f32, Device::cuda);
  ops::balance_loss_backward(ds, f, scores, T, 0.01, 0.25);
  ops::balance_loss_backward(ds_d, f_d, scores_d, T, 0.01, 0.25);
  CHECK(both(ds, ds_d));
}

TEST_CASE("cuda router matches the CPU: same experts (but for near-ties), gates and gradients within 1e-5",
          "[gpu][router]") {
  const std::int64_t N = 1000;
  for (const auto& spec : {ops::RouterSpec{.kind = ops::RouterKind::sigmoid,
                          .top_k = 8,
                          .n_groups = 8,
                          .topk_groups = 4,
                          .normalize = true,
                          .scaling = 2.5},
                           ops::RouterSpec{.kind = ops::RouterKind::softmax,
                           .top_k = 2,
                           .n_groups = 1,
                           .topk_groups = 1,
                           .normalize = false,
                           .scaling = 1.0}}) {
    const std::int64_t E = spec.kind == ops::RouterKind::sigmoid ? 64 : 16, K = spec.top_k;
    INFO("E " << E << " K " << K);
    const Tensor logits = random({N, E}, 31, 3, DType::f32), bias = random({E}, 32, 0.05, DType::f32);
    Tensor s = Tensor::empty({N, E}, DType::f32), idx = Tensor::empty({N, K}, DType::i32),
           g = Tensor::empty({N, K}, DType::f32);
    ops::router_forward(s, idx, g, logits, bias, spec);
    Tensor sd = Tensor::empty({N, E}, DType::f32, Device::cuda), idxd = Tensor::empty({N, K}, DType::i32, Device::cuda),
           gd = Tensor::empty({N, K}, DType::f32, Device::cuda);
    ops::router_forward(sd, idxd, gd, logits.to(Device::cuda), bias.to(Device::cuda), spec);
    CHECK(max_rel_err(sd.to(Device::cpu), s) < 1e-6);
    // A near-tie (biased scores within FP32 exp rounding) may pick another expert: allow
    // 0.5% of tokens; every other token must match exactly.
    const Tensor idx_got = idxd.to(Device::cpu), g_got = gd.to(Device::cpu);
    std::int64_t differ = 0;
    double gate_err = 0;
    for (std::int64_t n = 0; n < N; ++n) {
      const bool same = std::memcmp(idx_got.data<std::int32_t>() + n * K, idx.data<std::int32_t>() + n * K, K * 4) == 0;
      differ += !same;
      for (std::int64_t i = 0; same && i < K; ++i)
        gate_err = std::max(gate_err, double(std::abs(g_got.data<float>()[n * K + i] - g.data<float>()[n * K + i])));
    }
    CHECK(differ <= N / 200);
    CHECK(gate_err < 1e-5);
    // Backward from the CPU's own choices, with a balance-loss gradient on the scores.
    const Tensor dgate = random({N, K}, 33, 1, DType::f32), dscores = random({N, E}, 34, 0.1, DType::f32);
    Tensor dl = Tensor::empty({N, E}, DType::f32), dld = Tensor::empty({N, E}, DType::f32, Device::cuda);
    ops::router_backward(dl, dgate, s, idx, spec, dscores);
    ops::router_backward(dld, dgate.to(Device::cuda), s.to(Device::cuda), idx.to(Device::cuda), spec,
                         dscores.to(Device::cuda));
    CHECK(max_rel_err(dld.to(Device::cpu), dl) < 1e-5);
  }
}

TEST_CASE("cuda attention (cuBLASLt GEMMs and a masked-softmax kernel) matches the CPU forward and backward",
          "[gpu][attention]") {
  const std::int64_t B = 2, T = 67, H = 4, Hkv = 2, D = 32;
  const Tensor q = random({B, T, H, D}, 41, 1, DType::f32), k = random({B, T, Hkv, D}, 42, 1, DType::f32),
               v = random({B, T, Hkv, D}, 43, 1, DType::f32), dout = random({B, T, H, D}, 44, 1, DType::f32);
  Tensor out = Tensor::empty(q.shape(), DType::f32), probs = Tensor::empty({B, H, T, T}, DType::f32);
  Tensor dq = Tensor::empty(q.shape(), DType::f32), dk = Tensor::empty(k.shape(), DType::f32),
         dv = Tensor::empty(v.shape(), DType::f32);
  ops::attention_forward(out, probs, q, k, v);
  ops::attention_backward(dq, dk, dv, dout, q, k, v, probs);
  const Tensor qd = q.to(Device::cuda), kd = k.to(Device::cuda), vd = v.to(Device::cuda), dod = dout.to(Device::cuda);
  Tensor outd = Tensor::empty(q.shape(), DType::f32, Device::cuda),
         probsd = Tensor::empty({B, H, T, T}, DType::f32, Device::cuda);
  Tensor dqd = Tensor::empty(q.shape(), DType::f32, Device::cuda),
         dkd = Tensor::empty(k.shape(), DType::f32, Device::cuda),
         dvd = Tensor::empty(v.shape(), DType::f32, Device::cuda);
  ops::attention_forward(outd, probsd, qd, kd, vd);
  ops::attention_backward(dqd, dkd, dvd, dod, qd, kd, vd, probsd);
  CHECK(max_rel_err(probsd.to(Device::cpu), probs) < 1e-5);
  CHECK(max_rel_err(outd.to(Device::cpu), out) < 1e-5);
  CHECK(max_rel_err(dqd.to(Device::cpu), dq) < 1e-5);
  CHECK(max_rel_err(dkd.to(Device::cpu), dk) < 1e-5);
  CHECK(max_rel_err(dvd.to(Device::cpu), dv) < 1e-5);
}

TEST_CASE("cuda fused attention (cuDNN SDPA, BF16) matches the CPU within BF16 rounding", "[gpu][attention]") {
  if (!ops::fused_attention_on_gpu()) {
    WARN("built without cuDNN's fused attention: nothing to test");
    return;
  }
  // Inputs rounded to BF16 (8 significant bits) and a BF16 output: about 2^-8 of the norm.
  const std::int64_t B = 2, T = 128, H = 8, Hkv = 2, D = 64;
  const Tensor q = random({B, T, H, D}, 51, 1, DType::f32), k = random({B, T, Hkv, D}, 52, 1, DType::f32),
               v = random({B, T, Hkv, D}, 53, 1, DType::f32), dout = random({B, T, H, D}, 54, 1, DType::f32);
  Tensor out = Tensor::empty(q.shape(), DType::f32), lse = Tensor::empty({B, H, T}, DType::f32);
  Tensor dq = Tensor::empty(q.shape(), DType::f32), dk = Tensor::empty(k.shape(), DType::f32),
         dv = Tensor::empty(v.shape(), DType::f32);
  ops::attention_lse_forward(out, lse, q, k, v);
  ops::attention_lse_backward(dq, dk, dv, dout, q, k, v, out, lse);
  const Tensor qd = q.to(Device::cuda), kd = k.to(Device::cuda), vd = v.to(Device::cuda), dod = dout.to(Device::cuda);
  Tensor outd = Tensor::empty(q.shape(), DType::f32, Device::cuda),
         lsed = Tensor::empty({B, H, T}, DType::f32, Device::cuda);
  Tensor dqd = Tensor::empty(q.shape(), DType::f32, Device::cuda),
         dkd = Tensor::empty(k.shape(), DType::f32, Device::cuda),
         dvd = Tensor::empty(v.shape(), DType::f32, Device::cuda);
  ops::attention_lse_forward(outd, lsed, qd, kd, vd);
  ops::attention_lse_backward(dqd, dkd, dvd, dod, qd, kd, vd, outd, lsed);
  for (const auto& [name, got, want, tol] : {std::tuple{"out", &outd, &out, 1e-2},
                                             {"lse", &lsed, &lse, 1e-3},
                                             {"dq", &dqd, &dq, 2e-2},
                                             {"dk", &dkd, &dk, 2e-2},
                                             {"dv", &dvd, &dv, 2e-2}}) {
    const double e = norm_err(*got, *want);
    WARN("cuDNN SDPA " << name << ": " << e << " of the CPU's norm");
    CHECK(e < tol);
  }
}

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::cout << "SKIPPED: " << (built_with_cuda() ? "no CUDA device visible" : "built without CUDA") << "\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
