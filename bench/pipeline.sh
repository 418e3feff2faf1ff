#!/usr/bin/env bash
# Pipeline schedules under mpirun (after scripts/build.sh; prepares the tiny corpus if needed):
# 1F1B, interleaved 1F1B and DualPipeV with one stage per rank at one global batch, tokens/s,
# the measured bubble against each schedule's ideal, and stage 0's activation bytes.
# Usage: bench/pipeline.sh [ranks] [config] [key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-2}; shift $(( $# > 0 ? 1 : 0 ))
config=${1:-configs/tiny.yaml}; shift $(( $# > 0 ? 1 : 0 ))
source scripts/mpi-env.sh
build/trainer/moe data prepare "$config" > /dev/null
mpirun -np "$ranks" build/bench/bench_pipeline "$config" "$@"
