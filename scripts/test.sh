#!/usr/bin/env bash
# README command 2: install what is missing, build, and run every test (unit, mpirun,
# command line; gpu-labelled tests skip visibly without a GPU). Ends with ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --test  # the test-only Hugging Face environment too
bash scripts/build.sh
cd build
ctest --output-on-failure --parallel "$(nproc)" "$@"
