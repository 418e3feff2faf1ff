#!/usr/bin/env bash
# On the lent GPU machine, from the repository root, in one call (docs/BENCHMARKS.md has the
# invocation): the gpu-labelled test programs staged by scripts/device-stage.sh first (ctest's
# files name this machine's paths, so the programs run directly), then `moe train` of
# configs/small-gpu.yaml for a few steps in bf16 and fp8, then tests/cuda/train_tiny.sh (GPU
# against CPU), then the GEMM and train-step benchmarks with their PyTorch peers. Each result
# is written under $OUT (default ./device-results) the moment its stage ends, summary.txt
# last. The whole run keeps within DEVICE_CHECK_BUDGET seconds (default 400, under the 7
# minutes the device window allows one call): each stage gets at most its own cap and what
# is left, and a stage with under 20 s left is skipped (and said so in the summary).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-device-results}
mkdir -p "$out"
deadline=$(( $(date +%s) + ${DEVICE_CHECK_BUDGET:-400} ))
[ -d device-stage ] || tar -xJf device-stage.tar.xz
# moe initialises MPI as a singleton: the staged OpenMPI, no ssh/rsh launcher.
export OPAL_PREFIX="$PWD/device-stage/mpi" PMIX_MCA_mca_base_component_path="$PWD/device-stage/mpi/lib/x86_64-linux-gnu/pmix2/lib/pmix" OMPI_MCA_plm=isolated PMIX_MCA_pcompress_base_silence_warning=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
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
summary=()
rc=0
# stage NAME CAP_SECONDS COMMAND...: runs COMMAND with its output in $OUT/NAME.txt.
stage() {
  local name=$1 cap=$2; shift 2
  local left=$(( deadline - $(date +%s) ))
  if [ "$left" -lt 20 ]; then
    summary+=("$name: skipped (the time budget is spent)"); rc=1; return
  fi
  local t0 r
  t0=$(date +%s)
  timeout $(( cap < left ? cap : left )) "$@" > "$out/$name.txt" 2>&1
  r=$?
  summary+=("$name: exit $r in $(( $(date +%s) - t0 )) s$([ $r -eq 124 ] && echo ' (timed out)')")
  echo "$name: exit $r"; tail -n 4 "$out/$name.txt"
  [ $r -eq 0 ] || rc=1
}
for prog in device-stage/bin/test_*; do
  stage "$(basename "$prog")" 150 "$prog"
done
# configs/small-gpu.yaml (~1B parameters) for a few steps, on a corpus made of docs/ (the
# run's host<->device line and the FP8 fallbacks are in its log).
work=$(mktemp -d)
cat docs/*.md README.md | awk '/^$/ {print "%"; next} {print}' > "$work/corpus.txt"
stage prepare_small_gpu 60 device-stage/bin/moe data prepare configs/small-gpu.yaml --set data.corpus="$work/corpus.txt" \
  --set data.dir="$work/data" --set model.vocab_size=2048 --set data.val_fraction=0.3
for p in bf16 fp8; do
  stage "train_small_gpu_$p" 120 device-stage/bin/moe train configs/small-gpu.yaml --set precision=$p \
    --set data.dir="$work/data" --set model.vocab_size=2048 --set train.steps=3 --set train.grad_accum=1 \
    --set train.warmup_steps=1 --set train.log_every=1 --set train.eval_every=0 --set train.eval_batches=1 \
    --set checkpoint.dir="$work/ckpt_$p"
done
# configs/tiny.yaml trained on the GPU against the CPU (the staged moe; a corpus from docs/).
stage train_tiny 120 tests/cuda/train_tiny.sh device-stage/bin/moe "$PWD"
# Benchmarks, each with its PyTorch peer in the same run (the image's python3 has CUDA torch).
export PYTHON=python3 BENCH_TRAIN_STEP=device-stage/bin/bench_train_step
stage gemm_gpu 90 bench/gemm_gpu.sh device-stage/bin/bench_gemm_gpu
for p in bf16 fp8; do
  stage "train_step_$p" 90 env BENCH_STEPS=5 BENCH_ROUNDS=1 bench/train_step.sh 1 configs/small-gpu.yaml precision=$p
done
rm -rf "$work"
{
  cat "$out/device.txt"
  printf '%s\n' "${summary[@]}"
  grep -h "reference fallbacks" "$out"/*.txt 2>/dev/null | sort -u
  echo "overall: $([ $rc -eq 0 ] && echo pass || echo FAIL)"
} > "$out/summary.txt"
cat "$out/summary.txt"
exit $rc
