#!/usr/bin/env bash
# FP8 benchmark under mpirun (after scripts/build.sh; prepares the tiny corpus if needed):
# expert-dispatch bytes and saved activations per step for fp32, bf16 and fp8 side by side.
# Usage: bench/precision.sh [ranks] [config] [key=value ...]
exec "$(dirname "$0")/mpi_bench.sh" bench_precision "$@"
