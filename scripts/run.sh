#!/usr/bin/env bash
# README command 1: install what is missing, build, and pre-train the embedded default
# (configs/tiny.yaml on the fortune corpus) on CPU under mpirun, ending with the run report.
# Usage: scripts/run.sh [-np N] [moe train options, e.g. --set train.steps=50]
set -euo pipefail
cd "$(dirname "$0")/.."
np=2
if [ "${1:-}" = "-np" ]; then np=$2; shift 2; fi
bash scripts/build.sh
source scripts/mpi-env.sh
exec mpirun -np "$np" build/trainer/moe train configs/tiny.yaml "$@"
