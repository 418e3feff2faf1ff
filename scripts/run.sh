#!/usr/bin/env bash
# README command 1: install what is missing, build, prepare the embedded corpus (once), and
# pre-train the tiny default (configs/tiny.yaml) on CPU under mpirun, ending with the report
# and a checkpoint in runs/tiny. Each call trains from scratch (--fresh); `moe train` without
# it continues from runs/tiny/latest (README, "Checkpoints").
# Usage: scripts/run.sh [-np N] [moe train options, e.g. --set train.steps=50]
set -euo pipefail
cd "$(dirname "$0")/.."
np=2
if [ "${1:-}" = "-np" ]; then np=$2; shift 2; fi
bash scripts/build.sh
source scripts/mpi-env.sh
build/trainer/moe data prepare configs/tiny.yaml   # skips when runs/data/fortunes is prepared
exec mpirun -np "$np" build/trainer/moe train configs/tiny.yaml --fresh "$@"
