#!/usr/bin/env bash
# data.sources end to end: two prepared directories (the second reusing the first's
# tokenizer) mixed 3:1 under mpirun -np 2 for 80 steps; metrics.jsonl's source_tokens hold the shares
# (within one sequence per source at every step), the log names each source, a source that
# runs out starts its next epoch with a line, and a source with another tokenizer is refused
# in one line naming it.
# Usage: mixture.sh MOE CONFIG WORKDIR
set -euo pipefail
moe=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
fail() { echo "mixture: $*" >&2; exit 1; }
fortunes=/usr/share/games/fortunes
"$moe" data prepare "$config" --set data.corpus=$fortunes/fortunes --set data.dir=a --set model.vocab_size=400 > /dev/null
"$moe" data prepare "$config" --set data.corpus=$fortunes/pets --set data.dir=b --set model.vocab_size=400 \
  --set data.tokenizer=a/tokenizer.model > /dev/null
"$moe" data prepare "$config" --set data.corpus=$fortunes/computers --set data.dir=other --set model.vocab_size=400 > /dev/null
run=(--set model.vocab_size=400 --set data.dir=a --set train.steps=80 --set train.log_every=40 --set train.eval_batches=1
  --set train.micro_batch=2 --set checkpoint.dir=run)
mpirun -np 2 "$moe" train "$config" "${run[@]}" --set 'data.sources=[{dir: a, weight: 3}, {dir: b, weight: 1}]' \
  > train.log 2>&1 || { cat train.log; fail "training failed"; }
grep -q "data: source b (weight 1, 25.0% of the sequences)" train.log || fail "no source line for b"
grep -q "tokens per source: a " train.log || fail "no tokens-per-source line"
grep -q "data: source b has given all its .* windows by step .*: epoch 2 begins" train.log || fail "b never repeated"
python3 - run/metrics.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"source_tokens"' in l]
assert len(rows) == 80, len(rows)
T = 64
for r in rows:
    a, b = r["source_tokens"]["a"] / T, r["source_tokens"]["b"] / T
    seqs = r["step"] * 4  # 2 ranks x 2 sequences
    assert a + b == seqs and abs(b - seqs / 4) <= 1, r
print(f"mixture: source_tokens within one sequence of 3:1 at all {len(rows)} steps (last: a {a:.0f}, b {b:.0f} seqs)")
PY
if "$moe" train "$config" "${run[@]}" --set 'data.sources=[{dir: a, weight: 1}, {dir: other, weight: 1}]' \
  --set checkpoint.dir=run2 > out.txt 2> err.txt; then fail "another tokenizer was accepted"; fi
[ "$(wc -l < err.txt)" = 1 ] && grep -q "data.sources: other was prepared with another tokenizer than data.dir a" err.txt \
  || { cat err.txt; fail "expected one line naming the source"; }
echo "mixture: ok"
