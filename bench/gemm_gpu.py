"""PyTorch peer of bench_gemm_gpu on the same GPU: torch.matmul in BF16 and torch._scaled_mm
in FP8 (E4M3) at the shapes bench_gemm_gpu measured (read from its JSON), timed with CUDA
events (mean of 20 after 3 warm-ups). _scaled_mm gets DeepSeek-V3's scaling when this torch
has it (1x128 tiles for a, 128x128 blocks for b), else per-row scales (says which). Prints
both sides' TFLOP/s and the ratios moe / PyTorch.

Usage: python3 bench/gemm_gpu.py MOE_JSON
"""
import json
import sys

import torch


def tflops(fn, flops):
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        fn()
    end.record()
    torch.cuda.synchronize()
    return flops / (start.elapsed_time(end) / 1e3 / 20) / 1e12


def scaled_mm(M, N, K):
    """The fastest FP8 GEMM this torch offers with fine-grained scales: (callable, scaling)."""
    a = torch.randn(M, K, device="cuda").to(torch.float8_e4m3fn)
    b = torch.randn(N, K, device="cuda").to(torch.float8_e4m3fn).t()  # column-major (K,N), as _scaled_mm wants
    T = (K + 127) // 128
    tries = [("1x128 x 128x128 blocks", torch.ones(M, T, device="cuda").t().contiguous().t(),
              torch.ones(T, (N + 127) // 128, device="cuda")),
             ("per-row", torch.ones(M, 1, device="cuda"), torch.ones(1, N, device="cuda"))]
    for name, sa, sb in tries:
        try:
            torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
            return (lambda: torch._scaled_mm(a, b, scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)), name
        except (RuntimeError, TypeError, ValueError):
            continue
    return None, "unsupported"


def main():
    rows = json.load(open(sys.argv[1]))
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    print(f"{'M x N x K':<22} {'moe BF16':>9} {'torch BF16':>10} {'ratio':>6}   {'moe FP8':>8} {'torch FP8':>9} {'ratio':>6}  torch FP8 scaling")
    for r in rows:
        M, N, K = r["M"], r["N"], r["K"]
        flops = 2.0 * M * N * K
        a, b = torch.randn(M, K, device="cuda", dtype=torch.bfloat16), torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        bf16 = tflops(lambda: torch.matmul(a, b.t()), flops)
        fn, scaling = scaled_mm(M, N, K)
        fp8 = tflops(fn, flops) if fn else float("nan")
        print(f"{M:>6} x {N:>5} x {K:>5}  {r['bf16_tflops']:9.1f} {bf16:10.1f} {r['bf16_tflops'] / bf16:6.2f}   "
              f"{r['fp8_tflops']:8.1f} {fp8:9.1f} {r['fp8_tflops'] / fp8:6.2f}  {scaling}")


if __name__ == "__main__":
    main()
