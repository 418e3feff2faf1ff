#!/usr/bin/env bash
# gpu-labelled: configs/tiny.yaml trained 20 steps on the GPU and on the CPU, same data and
# seed (a corpus made of this project's docs, so nothing outside the checkout is needed):
# the last logged training loss agrees within 1e-3 relative (fp32; per-op differences are
# ~1e-6 and 20 steps amplify them a little), and the GPU run ends with its cost report.
# Exit 77 (ctest: Skipped) when moe sees no GPU.   Usage: train_tiny.sh MOE SOURCE_DIR
set -euo pipefail
moe=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cfg="$src/configs/tiny.yaml"
# One document per paragraph ("%" lines separate documents, as in the fortune databases).
cat "$src"/docs/*.md "$src"/README.md | awk '/^$/ {print "%"; next} {print}' > "$work/corpus.txt"
"$moe" data prepare "$cfg" --set data.corpus="$work/corpus.txt" --set data.dir="$work/data" > "$work/prepare.log"
common=(--set data.dir="$work/data" --set train.steps=20 --set train.warmup_steps=5 --set train.log_every=10
        --set train.eval_every=0 --set checkpoint.keep=1)
if ! "$moe" train "$cfg" "${common[@]}" --set device=cuda --dry-run > /dev/null 2> "$work/err"; then
  if grep -Eq "no GPU is visible|built without CUDA" "$work/err"; then
    echo "SKIPPED: $(cat "$work/err")"
    exit 77
  fi
  cat "$work/err" >&2
  exit 1
fi
for d in cpu cuda; do
  "$moe" train "$cfg" "${common[@]}" --set device=$d --set checkpoint.dir="$work/$d" > "$work/$d.log" 2>&1 ||
    { cat "$work/$d.log" >&2; exit 1; }
done
grep -q "cost" "$work/cuda.log" || { echo "the GPU run printed no cost report" >&2; exit 1; }
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def last_loss(d):
    rows = [json.loads(l) for l in open(f"{work}/{d}/metrics.jsonl") if '"loss"' in l]
    return rows[-1]["loss"], rows[-1]
(c, rc), (g, rg) = last_loss("cpu"), last_loss("cuda")
rel = abs(g - c) / abs(c)
print(f"step {rc.get('step')}: loss cpu {c:.6f} cuda {g:.6f} (relative {rel:.2e}); "
      f"tokens/s cpu {rc.get('tokens_per_s', '?')} cuda {rg.get('tokens_per_s', '?')}")
sys.exit(0 if rel < 1e-3 else 1)
PY
