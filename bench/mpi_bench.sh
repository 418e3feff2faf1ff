#!/usr/bin/env bash
# A benchmark program under mpirun (after scripts/build.sh; prepares the config's corpus if
# needed): the ranks, the config and overrides as the scripts beside it take them.
# Usage: bench/mpi_bench.sh PROGRAM [ranks] [config] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
program=$1; shift
ranks=${1:-2}; shift $(( $# > 0 ? 1 : 0 ))
config=${1:-configs/tiny.yaml}; shift $(( $# > 0 ? 1 : 0 ))
source scripts/mpi-env.sh
build/trainer/moe data prepare "$config" > /dev/null
mpirun -np "$ranks" "build/bench/$program" "$config" "$@"
