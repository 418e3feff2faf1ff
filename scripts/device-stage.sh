#!/usr/bin/env bash
# Stage the gpu-labelled test programs for a lent GPU machine: device-stage/bin holds the
# programs, device-stage/lib the shared libraries they need that the GPU machine's image
# lacks (this machine's Debian libraries: fmt, yaml-cpp, OpenMPI, ...). glibc and libstdc++
# stay behind (the image's are newer), and so do cuDNN, NVRTC, NCCL (218 MB), cuBLASLt (540 MB; both over
# the carry limit) and the CUDA runtime: scripts/device-check.sh finds those in the image's
# Python packages (nvidia-nccl, nvidia-cublas, nvidia-cuda-runtime), or /usr/local/cuda.
# Usage: scripts/device-stage.sh [build-dir]   then carry device-stage.tar.xz (docs/BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
stage=device-stage
rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib"
progs=$(ctest --test-dir "$build" -L gpu --show-only=json-v1 |
        /usr/bin/python3 -c 'import json,sys; print("\n".join(t["command"][0] for t in json.load(sys.stdin)["tests"]))')
for p in $progs; do cp "$p" "$stage/bin/"; done
cp "$build/trainer/moe" "$stage/bin/"            # for tests/cuda/train_tiny.sh
cp "$build/bench/bench_gemm_gpu" "$build/bench/bench_train_step" "$stage/bin/"  # GPU benchmarks, after the tests
skip='/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|ld-linux[^/]*|libnccl|libcudart|libcuda|libcublas|libcublasLt|libcudnn|libnvrtc)\.so'
# (ldd skips a staged shell test: it is no dynamic executable.) OpenMPI's orted and the MCA and
# PMIx plugins it opens at run time need theirs too (libpmix.so.2 among them).
mpi_lib=/usr/lib/x86_64-linux-gnu/openmpi
pmix_lib=/usr/lib/x86_64-linux-gnu/pmix2
for f in "$stage"/bin/* /usr/bin/orted "$mpi_lib"/lib/openmpi3/*.so "$pmix_lib"/lib/pmix/*.so; do
  ldd "$f" 2>/dev/null || true
done | awk '/=>/ && $3 ~ /^\// {print $3}' | sort -u | grep -Ev "$skip" |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
# OpenMPI for moe's singleton MPI_Init (no mpirun there): orted, the MCA plugins and the help
# files, in the layout OPAL_PREFIX relocates (scripts/device-check.sh sets it).
mkdir -p "$stage/mpi/bin" "$stage/mpi/lib/x86_64-linux-gnu" "$stage/mpi/share"
cp /usr/bin/orted "$stage/mpi/bin/"
cp -a "$mpi_lib" "$pmix_lib" "$stage/mpi/lib/x86_64-linux-gnu/"
cp -a /usr/share/openmpi "$stage/mpi/share/"
# The commit the programs were built from (the GPU machine's copy of .git may be older).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!device-stage' || echo -dirty)" > "$stage/commit"
# Carried compressed (the libraries alone pass the 64 MiB carry limit); device-check.sh unpacks.
tar -cJf "$stage.tar.xz" "$stage"
du -sh "$stage" "$stage.tar.xz"; ls "$stage/bin"
