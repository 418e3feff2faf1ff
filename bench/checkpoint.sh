#!/usr/bin/env bash
# Checkpoint save/load throughput vs POSIX I/O of the same bytes (after scripts/build.sh): 1
# rank, then 2 ranks as dp 2, tp 2, and ep 2 with ZeRO-1, then 1 rank with tensors 4x larger
# (fewer datasets: HDF5's per-dataset calls weigh less), in build/bench_ckpt (same disk as
# the project).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi-env.sh
rm -rf build/bench_ckpt
run() { local np=$1; shift; echo "== np $np $*"; mpirun -np "$np" build/bench/bench_checkpoint_io "$PWD/build/bench_ckpt" "$@"; }
run 1
run 2
run 2 parallel.tp=2
run 2 parallel.ep=2 parallel.zero=1
run 1 model.d_model=1024 model.ffn_hidden=3072 model.expert_hidden=768 model.n_layers=2
rm -rf build/bench_ckpt
