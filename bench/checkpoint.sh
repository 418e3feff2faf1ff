#!/usr/bin/env bash
# Checkpoint save/load throughput vs POSIX I/O of the same bytes (after scripts/build.sh), at
# 1 and 2 ranks, in build/bench_ckpt (same disk as the project).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi-env.sh
rm -rf build/bench_ckpt
for np in 1 2; do mpirun -np $np build/bench/bench_checkpoint_io "$PWD/build/bench_ckpt"; done
rm -rf build/bench_ckpt
