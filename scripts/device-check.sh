#!/usr/bin/env bash
# On the lent GPU machine: run the gpu-labelled tests from a build made on the dev machine
# and write the results under $OUT (default: ./device-results). The GPU machine lacks this
# project's Debian libraries: carry build/ and the shared libraries listed by `ldd` (see
# docs/BENCHMARKS.md, "Running on a lent GPU").
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-results}
mkdir -p "$out"
[ -d build/libs ] && export LD_LIBRARY_PATH="$PWD/build/libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
} > "$out/device.txt" 2>&1
(cd build && ctest -L gpu --output-on-failure) > "$out/gpu-tests.txt" 2>&1
rc=$?
tail -n 5 "$out/gpu-tests.txt"
exit $rc
