#!/usr/bin/env bash
# Parallelism II benchmark under mpirun (after scripts/build.sh; prepares the tiny corpus if
# needed): every pp x dp x tp (ep) layout of 8 ranks against dp8 at one global batch,
# tokens/s and bytes per step by kind against the analytic minimum.
# Usage: bench/layouts.sh [config] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny.yaml}; shift $(( $# > 0 ? 1 : 0 ))
source scripts/mpi-env.sh
build/trainer/moe data prepare "$config" > /dev/null
mpirun -np 8 build/bench/bench_layouts "$config" "$@"
