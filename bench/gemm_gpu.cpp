// GPU GEMM throughput (issue: FP8 at least 1.6x our BF16): ops::bf16_gemm and
// ops::sm90_fp8_gemm (cuBLASLt; FP8 with 1x128 / 128x128 scales) at 4096-class and
// expert-sized shapes, TFLOP/s and the FP8/BF16 ratio per shape (20 calls in a row, then one
// device sync; the FP8 call also transposes its activation scales). With OUT_JSON, the rows go there too for the peer,
// bench/gemm_gpu.py (torch.matmul, torch._scaled_mm; bench/gemm_gpu.sh runs both).
// Without a GPU it prints why and exits 77.   Usage: bench_gemm_gpu [OUT_JSON]
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "kernels/device.h"
#include "kernels/ops.h"

using namespace moe;

namespace {
// Random values of about unit size (tensor cores draw less power on zeros), on the GPU.
Tensor random_f32(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  Tensor t = Tensor::empty({rows, cols}, DType::f32);
  float* d = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    d[i] = static_cast<float>(static_cast<std::int64_t>(seed >> 33) % 2001 - 1000) / 1000.f;
  }
  return t;
}
Tensor to_bf16_gpu(const Tensor& x) {
  Tensor b = Tensor::empty(x.shape(), DType::bf16);
  ops::convert(b, x);
  return b.to(Device::cuda);
}

template <class F>
double seconds_per_call(F&& f) {
  for (int i = 0; i < 3; ++i) f();
  synchronize(Device::cuda);
  const int n = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) f();
  synchronize(Device::cuda);  // the GEMMs run asynchronously
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / n;
}
}  // namespace

int main(int argc, char** argv) try {
  if (cuda_device_count() == 0) {
    std::printf("SKIPPED: %s\n", built_with_cuda() ? "no CUDA device visible" : "built without CUDA");
    return 77;
  }
  std::printf("%-28s %10s %10s %8s\n", "M x N x K", "BF16 TF/s", "FP8 TF/s", "FP8/BF16");
  nlohmann::json rows = nlohmann::json::array();
  struct Shape3 {
    std::int64_t M, N, K;
  };
  // Square 4096-class; DeepSeek-V3-like expert GEMMs (hidden 7168, expert width 2048) at
  // 4096 and 512 routed tokens per expert.
  for (const auto [M, N, K] : {Shape3{4096, 4096, 4096}, Shape3{8192, 8192, 8192}, Shape3{4096, 2048, 7168},
                               Shape3{4096, 7168, 2048}, Shape3{512, 2048, 7168}}) {
    const std::int64_t T = K / 128;
    const Tensor x = random_f32(M, K, 1), w = random_f32(N, K, 2), xd = x.to(Device::cuda), wd = w.to(Device::cuda);
    const Tensor a = to_bf16_gpu(x), b = to_bf16_gpu(w);
    Tensor qa = Tensor::empty({M, K}, DType::e4m3, Device::cuda), qb = Tensor::empty({N, K}, DType::e4m3, Device::cuda);
    Tensor sa = Tensor::empty({M, T}, DType::f32, Device::cuda),
           sb = Tensor::empty({N / 128, T}, DType::f32, Device::cuda);
    ops::quantize_1x128(qa, sa, xd);
    ops::quantize_128x128(qb, sb, wd);
    Tensor y = Tensor::empty({M, N}, DType::f32, Device::cuda);
    const double flops = 2.0 * double(M) * double(N) * double(K);
    const double bf16 = flops / seconds_per_call([&] { ops::bf16_gemm(y, a, b); }) / 1e12;
    const double fp8 = flops / seconds_per_call([&] { ops::sm90_fp8_gemm(y, qa, sa, qb, sb); }) / 1e12;
    std::printf("%6lld x %6lld x %6lld      %10.1f %10.1f %8.2f\n", static_cast<long long>(M),
                static_cast<long long>(N), static_cast<long long>(K), bf16, fp8, fp8 / bf16);
    rows.push_back({{"M", M}, {"N", N}, {"K", K}, {"bf16_tflops", bf16}, {"fp8_tflops", fp8}});
  }
  if (argc > 1) std::ofstream(argv[1]) << rows.dump(1);
  std::printf("sm90_fp8_gemm reference fallbacks: %lld (0 expected)\n",
              static_cast<long long>(ops::fp8_reference_fallbacks()));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_gemm_gpu: %s\n", e.what());
  return 1;
}
