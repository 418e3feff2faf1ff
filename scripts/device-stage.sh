#!/usr/bin/env bash
# Stage the gpu-labelled test programs for a lent GPU machine: device-stage/bin holds the
# programs, device-stage/lib the shared libraries they need that the GPU machine's image
# lacks (this machine's Debian libraries: fmt, yaml-cpp, OpenMPI, ...). glibc and libstdc++
# stay behind (the image's are newer), and so do NCCL (218 MB), cuBLASLt (540 MB; both over
# the carry limit) and the CUDA runtime: scripts/device-check.sh finds those in the image's
# Python packages (nvidia-nccl, nvidia-cublas, nvidia-cuda-runtime), or /usr/local/cuda.
# Usage: scripts/device-stage.sh [build-dir]   then carry device-stage (see docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
stage=device-stage
rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib"
progs=$(ctest --test-dir "$build" -L gpu --show-only=json-v1 |
        /usr/bin/python3 -c 'import json,sys; print("\n".join(t["command"][0] for t in json.load(sys.stdin)["tests"]))')
for p in $progs; do cp "$p" "$stage/bin/"; done
cp "$build/bench/bench_gemm_gpu" "$stage/bin/"  # GPU benchmarks, run after the tests
skip='/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*|libnccl|libcudart|libcuda|libcublas|libcublasLt)\.so'
ldd "$stage"/bin/* | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u | grep -Ev "$skip" |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
# The commit the programs were built from (the GPU machine's copy of .git may be older).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!device-stage' || echo -dirty)" > "$stage/commit"
du -sh "$stage"; ls "$stage/bin"
