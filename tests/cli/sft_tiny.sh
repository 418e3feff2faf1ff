#!/usr/bin/env bash
# Supervised fine-tuning works, end to end as configs/sft-tiny.yaml describes it:
#   the tiny model pre-trained on the fortunes (400 steps here), then fine-tuned on the
#   generated instruction tasks (scripts/make-sft-tasks.py); `moe generate --chat` answers
#   held-out prompts (words and numbers the fine-tuning never saw) with an exact-match
#   accuracy well above the base model's (both printed; bounds below);
#   `moe eval` on the run's validation windows equals the training loop's validation loss;
#   sampling with a seed repeats itself, and another seed samples otherwise.
# Usage: sft_tiny.sh MOE WORKDIR
set -euo pipefail
moe=$1 work=$2
root="$(cd "$(dirname "$0")/../.." && pwd)"
rm -rf "$work" && mkdir -p "$work" && cd "$work"
run="mpirun -np 2 $moe train"
python3 "$root/scripts/make-sft-tasks.py" tasks --records 6000 --heldout 200 > /dev/null
"$moe" data prepare "$root/configs/tiny.yaml" --set data.dir=fortunes > /dev/null
$run "$root/configs/tiny.yaml" --set data.dir=fortunes --set train.steps=400 --set checkpoint.dir=base > base.log
sft=(--set data.corpus=tasks/train --set data.dir=sft_data --set data.tokenizer=fortunes/tokenizer.model
     --set checkpoint.dir=sft --set checkpoint.init_from=base/step_00000400.h5)
"$moe" data prepare "$root/configs/sft-tiny.yaml" "${sft[@]}" > prepare.log
$run "$root/configs/sft-tiny.yaml" "${sft[@]}" > sft.log

python3 - "$moe" <<'PY'
import json, subprocess, sys
moe = sys.argv[1]
held = [json.loads(l) for l in open("tasks/heldout.jsonl")]
open("prompts.txt", "w").write("".join(h["prompt"] + "\n" for h in held))

def answers(ckpt, *extra):
    out = subprocess.run([moe, "generate", ckpt, "--chat", "--jsonl", "--prompts-file", "prompts.txt",
                          "--max-new-tokens", "12", "--tokenizer", "fortunes/tokenizer.model", *extra],
                         check=True, capture_output=True, text=True).stdout
    return [json.loads(l)["completion"] for l in out.splitlines()]

def exact(completions):
    return sum(c.strip() == h["answer"] for c, h in zip(completions, held)) / len(held)

tuned, base = exact(answers("sft")), exact(answers("base"))
print(f"exact match on {len(held)} held-out prompts: fine-tuned {tuned:.3f}, base {base:.3f}")
# Measured 0.470 / 0.000 (a 400-step base, 1200 fine-tuning steps); the bounds leave room for
# another machine's rounding, not for a model that did not learn.
assert tuned >= 0.2 and base <= 0.05, (tuned, base)

# moe eval on the 2 x 16 windows the run validated on: its validation loss.
val = [json.loads(l)["val_loss"] for l in open("sft/metrics.jsonl") if "val_loss" in l][-1]
ev = json.loads(subprocess.run([moe, "eval", "sft", "--windows", "32", "--tokenizer", "fortunes/tokenizer.model"],
                               check=True, capture_output=True, text=True).stdout)["data"]
print(f"moe eval: loss {ev['loss']:.6f} (perplexity {ev['perplexity']:.4f}) on {ev['tokens']} targets; "
      f"the run's validation loss {val:.6f}")
assert abs(ev["loss"] - val) <= 1e-5 * val, (ev, val)

a = answers("sft", "--temperature", "0.9", "--top-k", "20", "--seed", "7")
b = answers("sft", "--temperature", "0.9", "--top-k", "20", "--seed", "7")
c = answers("sft", "--temperature", "0.9", "--top-k", "20", "--seed", "8")
assert a == b, "the same seed sampled differently"
assert a != c, "another seed sampled the same text for every prompt"
print("sampling: seed 7 twice identical; seed 8 differs on", sum(x != y for x, y in zip(a, c)), "prompts")
PY
