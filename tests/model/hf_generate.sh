#!/usr/bin/env bash
# moe generate and moe eval against transformers on the same weights (hf_generate_check.py):
# a config trained for 300 steps and exported; the greedy tokens of a few prompts equal
# transformers' generate() (its KV cache against our whole-window recomputation), and each
# multiple-choice log-likelihood equals the one computed from transformers' logits.
# Usage: hf_generate.sh MOE DATA_DIR WORKDIR CONFIG; skips (77) without deps/hf-venv.
set -euo pipefail
source "$(dirname "$0")/hf_venv.sh"
moe=$1 data=$2 work=$3 config=$4
rm -rf "$work" && mkdir -p "$work"
"$moe" train "$config" --set data.dir="$data" --set model.vocab_size=400 --set train.steps=300 \
  --set train.eval_batches=1 --set checkpoint.dir="$work/run" > "$work/train.log"
ckpt="$work/run/step_00000300.h5"
"$moe" export "$ckpt" "$work/hf" > /dev/null
printf '%s\n' "The computer" "A program is a" "Why does it" > "$work/prompts.txt"
cat > "$work/choices.jsonl" <<'JSON'
{"context": "The computer is", "choices": [" fast", " a program", " broken again"], "answer": 0}
{"context": "Why", "choices": [" not?", " is it", " me"], "answer": 2}
{"context": "A bug in the", "choices": [" code", " system of the world"], "answer": 0}
JSON
"$moe" generate "$ckpt" --jsonl --prompts-file "$work/prompts.txt" --max-new-tokens 12 > "$work/generated.jsonl"
# The KV cache's tokens are the recomputed window's (transformers' check below covers both).
"$moe" generate "$ckpt" --jsonl --prompts-file "$work/prompts.txt" --max-new-tokens 12 --no-kv-cache \
  > "$work/generated_no_cache.jsonl"
cmp "$work/generated.jsonl" "$work/generated_no_cache.jsonl"
"$moe" eval "$ckpt" --choices "$work/choices.jsonl" > "$work/choices.json"
"$py" "$root/tests/model/hf_generate_check.py" "$work/hf" "$work/prompts.txt" "$work/generated.jsonl" \
  "$work/choices.jsonl" "$work/choices.json"
