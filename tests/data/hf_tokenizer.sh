#!/usr/bin/env bash
# moe's tokenizer.json reader against HF tokenizers (hf_tokenizer_check.py), then through the
# product: moe data prepare with data.tokenizer a tokenizer.json, 5 training steps, and moe
# generate decoding with it. Usage: hf_tokenizer.sh MOE TOKENIZE WORKDIR; skips (77) without
# deps/hf-venv.
set -euo pipefail
source "$(dirname "$0")/../model/hf_venv.sh"
moe=$1 tokenize=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
corpus=/usr/share/games/fortunes/fortunes
"$py" "$root/tests/data/hf_tokenizer_check.py" "$tokenize" "$corpus" "$work"
tok="$work/deepseek_v3/tokenizer.json"
set_=(--set data.corpus=$corpus --set data.dir="$work/data" --set data.tokenizer="$tok" --set model.vocab_size=704)
"$moe" data prepare "$root/configs/tiny.yaml" "${set_[@]}" > "$work/prepare.log"
grep -q '"tokenizer": "tokenizer.json"' "$work/data/meta.json"
"$moe" train "$root/configs/tiny.yaml" "${set_[@]}" --set train.steps=5 --set train.eval_batches=1 \
  --set checkpoint.dir="$work/run" > "$work/train.log"
"$moe" generate "$work/run" --prompt "The computer" --max-new-tokens 8 --min-new-tokens 8 --jsonl > "$work/gen.jsonl"
"$py" -c "
import json, sys
from tokenizers import Tokenizer
row = json.loads(open('$work/gen.jsonl').readline())
tok = Tokenizer.from_file('$tok')
assert row['completion'] == tok.decode(row['completion_ids'], skip_special_tokens=False), row
print('moe generate through tokenizer.json:', row)
"
