#!/usr/bin/env bash
# Tokens/s of a training step on a config (default configs/tiny.yaml): moe vs the PyTorch
# implementation of the same model, same thread count, in one run; prints the ratio.
# Usage: bench/train_step.sh [threads] [config] [key=value ...]   (after scripts/build.sh)
# On a GPU: bench/train_step.sh 1 configs/small-gpu.yaml precision=bf16 (device: cuda there).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1}; config=${2:-configs/tiny.yaml}; shift $(( $# > 2 ? 2 : $# ))
out=$(mktemp)
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
echo "bench train_step: $config, $threads thread(s), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
"${BENCH_TRAIN_STEP:-build/bench/bench_train_step}" "$config" "$out" "$@"
"${PYTHON:-/usr/bin/python3}" bench/train_step.py "$out" --threads "$threads"  # PYTHON: one with PyTorch
rm -f "$out"
