#!/usr/bin/env bash
# Checkpoint save/load throughput vs POSIX I/O of the same bytes (after scripts/build.sh): 1
# rank, then 2 ranks as dp 2, tp 2, and ep 2 with ZeRO-1, then 1 rank with tensors 4x larger
# (fewer datasets: HDF5's per-dataset calls weigh less), then 1 rank bound to no core, in
# build/bench_ckpt (same disk as the project).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/mpi-env.sh
rm -rf build/bench_ckpt
# run NP [mpirun options --] [config key=value ...]
run() {
  local np=$1; shift
  local opts=()
  if [[ " $* " == *" -- "* ]]; then while [[ $1 != -- ]]; do opts+=("$1"); shift; done; shift; fi
  echo "== np $np ${opts[*]} $*"
  mpirun -np "$np" "${opts[@]}" build/bench/bench_checkpoint_io "$PWD/build/bench_ckpt" "$@"
}
run 1
run 2
run 2 parallel.tp=2
run 2 parallel.ep=2 parallel.zero=1
run 1 model.d_model=1024 model.ffn_hidden=3072 model.expert_hidden=768 model.n_layers=2
# mpirun binds a rank to one core here, which the load's reader thread then shares with
# HDF5's calls; a rank with a second hardware thread (as on a GPU node) overlaps them.
run 1 --bind-to none --
# What a save costs the training steps, synchronous against checkpoint.async.
mpirun -np 1 --bind-to none build/bench/bench_checkpoint_io --stall "$PWD/build/bench_ckpt"
mpirun -np 2 build/bench/bench_checkpoint_io --stall "$PWD/build/bench_ckpt"
rm -rf build/bench_ckpt
