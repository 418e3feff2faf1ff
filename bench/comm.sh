#!/usr/bin/env bash
# Parallelism I benchmarks under mpirun (after scripts/build.sh; prepares the tiny corpus if
# needed): our all-to-all-v against MPI_Alltoallv on the same buffers, and bytes per step of
# each layout against the analytic minimum, at 2 and 4 ranks; expert dispatch bytes by link,
# flat against hierarchical, over two simulated nodes of 2; step time with and without the
# shared experts hiding the expert all-to-all under a slow link, at 2 ranks; load balance and
# step time with redundant experts under a skewed router, at 2 ranks.
# Usage: bench/comm.sh [config] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny.yaml}; shift $(( $# > 0 ? 1 : 0 ))
source scripts/mpi-env.sh
build/trainer/moe data prepare "$config" > /dev/null
for np in 2 4; do mpirun -np $np build/bench/bench_all_to_all; done
for np in 2 4; do mpirun -np $np build/bench/bench_comm_bytes "$config" "$@"; done
mpirun -np 4 build/bench/bench_dispatch_links "$config" "$@"
mpirun -np 2 build/bench/bench_dispatch_links --overlap "$config" "$@"
mpirun -np 2 build/bench/bench_dispatch_links --redundant "$config" "$@"
