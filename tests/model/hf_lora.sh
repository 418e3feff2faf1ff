#!/usr/bin/env bash
# LoRA end to end against Hugging Face transformers + PEFT: a base trained 150 steps, then
# LoRA fine-tuned 150 steps from it (every projection adapted, the base frozen). Checks:
#  - the base is bitwise unchanged: the LoRA run's exported base tensors equal the base run's;
#  - moe export --lora peft loads in PEFT (PeftModel over the exported base) and gives our
#    greedy tokens and multiple-choice log-likelihoods (hf_generate_check.py);
#  - moe export (merged: W + s B A) gives them too, with plain transformers;
#  - and the exported base without its adapters does not (the adapters changed the model).
#  - rsLoRA (lora.rslora) the same way: PEFT with use_rslora, and merged.
# Usage: hf_lora.sh MOE DATA_DIR WORKDIR CONFIG; skips (77) without deps/hf-venv.
set -euo pipefail
source "$(dirname "$0")/hf_venv.sh"
moe=$1 data=$2 work=$3 config=$4
rm -rf "$work" && mkdir -p "$work"
common=(--set data.dir="$data" --set model.vocab_size=400 --set train.steps=150 --set train.eval_batches=1)
"$moe" train "$config" "${common[@]}" --set checkpoint.dir="$work/base" > "$work/base.log"
"$moe" train "$config" "${common[@]}" --set checkpoint.dir="$work/lora" \
  --set checkpoint.init_from="$work/base/step_00000150.h5" --set lora.rank=4 --set lora.alpha=8 \
  --set train.lr=1e-2 > "$work/lora.log"
grep -q "LoRA: rank 4" "$work/lora.log"
ckpt="$work/lora/step_00000150.h5"
"$moe" export "$work/base/step_00000150.h5" "$work/hf_base" > /dev/null
"$moe" export "$ckpt" "$work/hf_peft" --lora peft > /dev/null
"$moe" export "$ckpt" "$work/hf_merged" > /dev/null
"$py" - "$work/hf_base/model.safetensors" "$work/hf_peft/model.safetensors" "$work/hf_merged/model.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
base, peft_base, merged = (load_file(p) for p in sys.argv[1:4])
assert base.keys() == peft_base.keys() == merged.keys(), "tensor names differ"
same = [n for n in base if (base[n] == peft_base[n]).all()]
moved = [n for n in base if not (base[n] == merged[n]).all()]
print(f"base bitwise unchanged by LoRA: {len(same)} of {len(base)} tensors; merged export differs in {len(moved)}")
assert len(same) == len(base), sorted(set(base) - set(same))[:5]
projections = {"q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj",
               "gate_proj", "up_proj", "down_proj"}
assert moved and all(n.split(".")[-2] in projections for n in moved), moved[:5]
PY
printf '%s\n' "The computer" "A program is a" "Why does it" > "$work/prompts.txt"
cat > "$work/choices.jsonl" <<'JSON'
{"context": "The computer is", "choices": [" fast", " a program", " broken again"], "answer": 0}
{"context": "Why", "choices": [" not?", " is it", " me"], "answer": 2}
JSON
"$moe" generate "$ckpt" --jsonl --prompts-file "$work/prompts.txt" --max-new-tokens 12 > "$work/generated.jsonl"
"$moe" eval "$ckpt" --choices "$work/choices.jsonl" > "$work/choices.json"
"$py" "$root/tests/model/hf_generate_check.py" "$work/hf_peft" "$work/prompts.txt" "$work/generated.jsonl" \
  "$work/choices.jsonl" "$work/choices.json" "$work/hf_peft/adapter"
# The adapters matter: the base alone does not give them.
if "$py" "$root/tests/model/hf_generate_check.py" "$work/hf_peft" "$work/prompts.txt" "$work/generated.jsonl" \
  "$work/choices.jsonl" "$work/choices.json" > "$work/base_alone.txt"; then
  echo "hf_lora: the base model without its adapters gives the LoRA model's outputs: the adapters did nothing"
  exit 1
fi
"$py" "$root/tests/model/hf_generate_check.py" "$work/hf_merged" "$work/prompts.txt" "$work/generated.jsonl" \
  "$work/choices.jsonl" "$work/choices.json"
# Rank-stabilized LoRA (lora.rslora: the update scaled by alpha / sqrt(rank), 4 here where
# alpha / rank is 2): PEFT with use_rslora gives our outputs, and so does the merged export.
"$moe" train "$config" "${common[@]}" --set train.steps=60 --set checkpoint.dir="$work/rslora" \
  --set checkpoint.init_from="$work/base/step_00000150.h5" --set lora.rank=4 --set lora.alpha=8 \
  --set lora.rslora=true --set train.lr=1e-2 > "$work/rslora.log"
rs="$work/rslora/step_00000060.h5"
"$moe" export "$rs" "$work/hf_rs_peft" --lora peft > /dev/null
"$moe" export "$rs" "$work/hf_rs_merged" > /dev/null
grep -q '"use_rslora": true' "$work/hf_rs_peft/adapter/adapter_config.json"
"$moe" generate "$rs" --jsonl --prompts-file "$work/prompts.txt" --max-new-tokens 12 > "$work/rs_generated.jsonl"
"$moe" eval "$rs" --choices "$work/choices.jsonl" > "$work/rs_choices.json"
for hf in "$work/hf_rs_peft" "$work/hf_rs_merged"; do
  adapter=(); [ "$hf" = "$work/hf_rs_peft" ] && adapter=("$hf/adapter")
  "$py" "$root/tests/model/hf_generate_check.py" "$hf" "$work/prompts.txt" "$work/rs_generated.jsonl" \
    "$work/choices.jsonl" "$work/rs_choices.json" "${adapter[@]}"
done
