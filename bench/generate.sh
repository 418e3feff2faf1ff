#!/usr/bin/env bash
# Tokens/s of greedy generation on the CPU, one prompt, one run: moe generate with its KV cache,
# moe generate recomputing the window per token (--no-kv-cache), and the peer a user would
# run, transformers' generate() (its KV cache) on the same weights exported; same thread count.
# The model: CONFIG (default configs/deepseek-v3-tiny.yaml: MLA) trained 30 steps with
# model.seq_len 320 so that 16 prompt + 256 new tokens fit one window. moe's time per token is
# the difference of a 257- and a 1-token run over 256 (the checkpoint's load cancels out).
# Usage: bench/generate.sh [threads] [config]  (after scripts/build.sh and scripts/install-deps.sh --test)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1} config=${2:-configs/deepseek-v3-tiny.yaml}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
moe=build/trainer/moe work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "bench generate: $config, $threads thread(s), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
[ -f runs/data/fortunes/meta.json ] || "$moe" data prepare configs/tiny.yaml > /dev/null
"$moe" train "$config" --set data.dir=runs/data/fortunes --set model.vocab_size=1024 --set model.seq_len=320 \
  --set train.steps=30 --set train.micro_batch=2 --set train.eval_batches=1 --set checkpoint.dir="$work/run" > /dev/null
ckpt="$work/run/step_00000030.h5"
"$moe" export "$ckpt" "$work/hf" --tokenizer runs/data/fortunes/tokenizer.model > /dev/null
prompt="The computer said that the program would run on every machine"
seconds() {  # moe generate's wall time for $1 new tokens, $2.. more flags
  local n=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  "$moe" generate "$ckpt" --prompt "$prompt" --max-new-tokens "$n" --min-new-tokens "$n" --jsonl "$@" > /dev/null
  t1=$(date +%s%N)
  echo $((t1 - t0))  # ns
}
for mode in cache no-cache; do
  flags=(); [ "$mode" = no-cache ] && flags=(--no-kv-cache)
  one=$(seconds 1 "${flags[@]}") many=$(seconds 257 "${flags[@]}")
  printf 'moe generate (%s)%*s %8.1f tokens/s\n' "$mode" $((10 - ${#mode})) "" \
    "$(python3 -c "print(256e9 / ($many - $one))")"
done | tee "$work/moe.txt"
deps/hf-venv/bin/python bench/generate.py "$work/hf" "$prompt" --threads "$threads" --moe "$work/moe.txt"
