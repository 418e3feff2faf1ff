#!/usr/bin/env bash
# Installs what is missing, then configures and builds moe into build/ (Release, warnings as
# errors). Extra arguments go to CMake, e.g. scripts/build.sh -DMOE_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_WERROR=ON "$@" >/dev/null
cmake --build build --parallel "$(nproc)"
