#!/usr/bin/env bash
# Tokens/s of a training step of configs/deepseek-v3-tiny.yaml (MLA, MoE): moe against Hugging
# Face transformers' DeepseekV3ForCausalLM of the same shapes, same thread count, in one run;
# prints the ratio. transformers has no multi-token prediction, so the ratio is taken with
# model.mtp_depth=0; moe with its MTP depth is printed beside it.
# Usage: bench/hf_train_step.sh [threads] [key=value ...]  (after scripts/build.sh and
# scripts/install-deps.sh --test, which makes deps/hf-venv); BENCH_COMPILE=1 tries torch.compile.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1}; shift $(( $# > 0 ? 1 : 0 ))
config=configs/deepseek-v3-tiny.yaml
out=$(mktemp)
trap 'rm -f "$out"' EXIT
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
echo "bench hf_train_step: $config, $threads thread(s), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
bench=${BENCH_TRAIN_STEP:-build/bench/bench_train_step}
echo -n "with MTP (depth 1)   " && "$bench" "$config" /dev/null "$@"
echo -n "without MTP          " && "$bench" "$config" "$out" model.mtp_depth=0 "$@"
deps/hf-venv/bin/python bench/hf_train_step.py "$out" --threads "$threads" ${BENCH_COMPILE:+--compile}
