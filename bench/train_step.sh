#!/usr/bin/env bash
# Tokens/s of a training step on a config (default configs/tiny.yaml): moe vs the PyTorch
# implementation of the same model, same thread count, in one run; prints the ratio.
# Usage: bench/train_step.sh [threads] [config] [key=value ...]   (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1}; config=${2:-configs/tiny.yaml}; shift $(( $# > 2 ? 2 : $# ))
out=$(mktemp)
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
echo "bench train_step: $config, $threads thread(s), $(lscpu | sed -n 's/^Model name: *//p')"
build/bench/bench_train_step "$config" "$out" "$@"
/usr/bin/python3 bench/train_step.py "$out" --threads "$threads"
rm -f "$out"
