#!/usr/bin/env bash
# On the lent GPU machine: run the gpu-labelled test programs staged by
# scripts/device-stage.sh (ctest's files name this machine's paths, so the programs run
# directly) and write the results under $OUT (default: ./device-results).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-results}
mkdir -p "$out"
[ -d device-stage ] || tar -xJf device-stage.tar.xz
# moe initialises MPI as a singleton: the staged OpenMPI, no ssh/rsh launcher.
export OPAL_PREFIX="$PWD/device-stage/mpi" OMPI_MCA_plm=isolated PMIX_MCA_pcompress_base_silence_warning=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export PATH="$PWD/device-stage/mpi/bin:$PATH"
# NCCL and the CUDA runtime come from the image's Python packages (nvidia-nccl-cu13, ...).
py_libs=$(python3 -c 'import glob, site; print(":".join(sorted(glob.glob(site.getsitepackages()[0] + "/nvidia/*/lib"))))' 2>/dev/null || true)
export LD_LIBRARY_PATH="$PWD/device-stage/lib:${py_libs}:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
  date -u +"date %Y-%m-%dT%H:%M:%SZ"
  echo "commit $(cat device-stage/commit 2>/dev/null || echo unknown) (built and staged by scripts/device-stage.sh)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "no nvidia-smi"
} > "$out/device.txt" 2>&1
cat "$out/device.txt"
rc=0
for prog in device-stage/bin/test_*; do
  name=$(basename "$prog")
  timeout 240 "$prog" > "$out/$name.txt" 2>&1
  r=$?
  echo "$name: exit $r"; tail -n 3 "$out/$name.txt"
  [ $r -eq 0 ] || rc=1
done
# configs/tiny.yaml trained on the GPU against the CPU (the staged moe; a corpus from docs/).
timeout 300 tests/cuda/train_tiny.sh device-stage/bin/moe "$PWD" > "$out/train_tiny.txt" 2>&1
r=$?
echo "train_tiny: exit $r"; tail -n 3 "$out/train_tiny.txt"
[ $r -eq 0 ] || rc=1
# Benchmarks, each with its PyTorch peer in the same run (the image's python3 has CUDA torch).
export PYTHON=python3 BENCH_TRAIN_STEP=device-stage/bin/bench_train_step
timeout 240 bench/gemm_gpu.sh device-stage/bin/bench_gemm_gpu > "$out/gemm_gpu.txt" 2>&1
echo "gemm_gpu: exit $?"; cat "$out/gemm_gpu.txt"
# configs/small-gpu.yaml (~1B parameters): a few steps each (BENCH_STEPS, BENCH_ROUNDS).
for p in bf16 fp8; do
  BENCH_STEPS=5 BENCH_ROUNDS=1 timeout 240 bench/train_step.sh 1 configs/small-gpu.yaml precision=$p > "$out/train_step_$p.txt" 2>&1
  echo "train_step $p: exit $?"; cat "$out/train_step_$p.txt"
done
exit $rc
