#!/usr/bin/env bash
# Pipeline schedules under mpirun (after scripts/build.sh; prepares the tiny corpus if needed):
# 1F1B, interleaved 1F1B and DualPipeV with one stage per rank at one global batch, tokens/s,
# the measured bubble against each schedule's ideal, and stage 0's activation bytes.
# Usage: bench/pipeline.sh [ranks] [config] [key=value ...]
exec "$(dirname "$0")/mpi_bench.sh" bench_pipeline "$@"
