#!/usr/bin/env bash
# GPU GEMM TFLOP/s: moe's BF16 and block-scaled FP8 (bench_gemm_gpu) and PyTorch's
# torch.matmul / torch._scaled_mm (bench/gemm_gpu.py) on the same GPU in one run, with the
# ratios. Usage: bench/gemm_gpu.sh [bench_gemm_gpu]   (PYTHON: a python3 with CUDA PyTorch)
set -euo pipefail
cd "$(dirname "$0")/.."
prog=${1:-build/bench/bench_gemm_gpu}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$prog" "$out"
"${PYTHON:-python3}" bench/gemm_gpu.py "$out"
