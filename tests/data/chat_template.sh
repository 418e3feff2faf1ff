#!/usr/bin/env bash
# Jinja chat templates against transformers' apply_chat_template (chat_template_check.py),
# then through the product: moe data prepare with data.chat_template=tokenizer (meta.json
# records the template), 3 training steps, and moe generate --chat prompting with the same
# ids transformers' generation prompt has. Usage: chat_template.sh MOE RENDER_CHAT WORKDIR;
# skips (77) without deps/hf-venv or without minja in the build.
set -euo pipefail
source "$(dirname "$0")/../model/hf_venv.sh"
moe=$1 render=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
probe=$("$render" "{{ messages }}" "" /dev/null 2>&1 || true)
if grep -q "lacks" <<< "$probe"; then
  echo "SKIP: built without minja (deps/minja)"; exit 77
fi
"$py" "$root/tests/data/chat_template_check.py" "$render" /usr/share/games/fortunes/fortunes "$work"
d="$work/chatml"
for i in $(seq 40); do cat "$d/chats.jsonl"; done > "$d/corpus.jsonl"
set_=(--set data.corpus="$d/corpus.jsonl" --set data.dir="$work/data" --set data.tokenizer="$d/tokenizer.json"
      --set data.chat_template=tokenizer --set model.vocab_size=704 --set model.seq_len=128)
"$moe" data prepare "$root/configs/tiny.yaml" "${set_[@]}" > "$work/prepare.log"
"$py" -c "
import json
meta = json.load(open('$work/data/meta.json'))
assert meta['chat_template'] == open('$d/chat_template.jinja').read(), meta['chat_template']
assert meta['loss_mask'] and meta['target_tokens'] > 0, meta
"
"$moe" train "$root/configs/tiny.yaml" "${set_[@]}" --set train.steps=3 --set train.eval_batches=1 \
  --set checkpoint.dir="$work/run" > "$work/train.log"
"$moe" generate "$work/run" --chat --prompt "What is 2+2?" --max-new-tokens 4 --jsonl > "$work/gen.jsonl"
"$py" -c "
import json
from transformers import PreTrainedTokenizerFast
tok = PreTrainedTokenizerFast(tokenizer_file='$d/tokenizer.json')
tok.chat_template = open('$d/chat_template.jinja').read()
want = tok.apply_chat_template([{'role': 'user', 'content': 'What is 2+2?'}], tokenize=True, add_generation_prompt=True)
row = json.loads(open('$work/gen.jsonl').readline())
assert row['prompt_ids'] == want, (row['prompt_ids'], want)
print('moe generate --chat prompts with transformers\' ids:', len(want), 'tokens')
"
