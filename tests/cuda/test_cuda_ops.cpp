// gpu-labelled: CUDA ops against the CPU reference. Every op of the op table
// (tests/kernels/op_table.h) on the GPU against the CPU, timed; then what a tolerance alone
// cannot say: cuBLASLt's FP8 and BF16 GEMMs (no CPU path) and the router's near-ties.
// Without a GPU (or a CUDA build) the program prints why and exits 77, which ctest reports
// as "Skipped".
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iostream>
#include <tuple>
#include <vector>

#include "kernels/device.h"
#include "kernels/ops.h"
#include "tests/kernels/op_table.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// ||a - b|| / ||b||, the GPU tensor brought back.
double gpu_err(const Tensor& a, const Tensor& b) { return norm_err(a.to(Device::cpu), b.to(Device::cpu)); }
}  // namespace

TEST_CASE("cuda tensors round-trip through device memory", "[gpu][tensor]") {
  Tensor a = random({3, 1000}, 3, 1, DType::f32);
  Tensor back = a.to(Device::cuda).to(Device::cpu);
  CHECK(max_rel_err(back, a) == 0.0);
}

TEST_CASE("cuda: every op of the op table matches the CPU within its tolerance (0: bit for bit)", "[gpu][table]") {
  for (const OpCase& c : op_cases()) {
    if (!c.on_gpu) continue;
    INFO(c.name);
    const auto want = c.run(DType::f32, Device::cpu);
    c.run(DType::f32, Device::cuda);  // warm-up: plans, caches, the allocator's pool
    synchronize(Device::cuda);
    const auto t0 = std::chrono::steady_clock::now();
    const auto got = c.run(DType::f32, Device::cuda);  // (copies its outputs back: a host wait)
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(got.size() == want.size());
    double worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i) {
      INFO("output " << i << ": " << got[i].describe());
      const double e = norm_err(got[i], want[i]);
      worst = std::max(worst, e);
      if (c.gpu_tol == 0) CHECK(same_bits(got[i], want[i]));
      else CHECK(e <= c.gpu_tol);
    }
    std::cout << fmt::format("  {:<100} err {:.2e}  {:8.3f} ms{}\n", c.name, worst, 1e3 * s,
                             c.flops > 0 ? fmt::format("  {:.1f} GFLOP/s", c.flops / s / 1e9) : "");
  }
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
    const double e = gpu_err(fast, ref);
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
    const double er = gpu_err(fast, ref);
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
  CHECK(gpu_err(yg, y) < 1e-5);
  CHECK(gpu_err(dxg, dx) < 1e-5);
  CHECK(gpu_err(dwg, dw) < 1e-5);
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

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::cout << "SKIPPED: " << (built_with_cuda() ? "no CUDA device visible" : "built without CUDA") << "\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
