#!/usr/bin/env bash
# FP8 benchmark under mpirun (after scripts/build.sh; prepares the tiny corpus if needed):
# expert-dispatch bytes and saved activations per step for fp32, bf16 and fp8 side by side.
# Usage: bench/precision.sh [ranks] [config] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}; shift $(( $# > 0 ? 1 : 0 ))
config=${1:-configs/tiny.yaml}; shift $(( $# > 0 ? 1 : 0 ))
source scripts/mpi-env.sh
build/trainer/moe data prepare "$config" > /dev/null
mpirun -np "$ranks" build/bench/bench_precision "$config" "$@"
