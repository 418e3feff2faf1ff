#!/usr/bin/env bash
# moe data prepare's throughput against the peer a user would write: Python reading the same
# JSONL with json, encoding with the sentencepiece package (the same tokenizer.model) and
# writing uint16 shards with numpy; one process each, same machine, same tokenizer. The
# corpus: MB megabytes (default 1024) of JSONL made from the fortune databases (each record a
# fortune with a serial number, so no two are equal). moe runs with its filters off (the peer
# has none: the ratio compares reading, encoding and writing), then once with its defaults on.
# Prints MB/s of input and tokens/s per core for each, and the ratio.
# Usage: bench/prepare.sh [MB]  (after scripts/build.sh and scripts/install-deps.sh --test: the peer runs in
# deps/hf-venv, which has the sentencepiece package)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-1024}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
moe=build/trainer/moe work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
echo "bench prepare: ${mb} MB of JSONL, 1 process, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
[ -f runs/data/fortunes/meta.json ] || "$moe" data prepare configs/tiny.yaml > /dev/null
tok=runs/data/fortunes/tokenizer.model
mkdir -p "$work/corpus"
/usr/bin/python3 - "$work/corpus/records.jsonl" "$mb" <<'PY'
import glob, json, sys
docs = []
for f in sorted(glob.glob("/usr/share/games/fortunes/*")):
    if f.endswith((".dat", ".u8")):
        continue
    try:
        docs += [d.strip() for d in open(f, encoding="utf-8").read().split("\n%\n") if d.strip()]
    except (UnicodeDecodeError, IsADirectoryError):
        pass
target, n, i = int(sys.argv[2]) << 20, 0, 0
with open(sys.argv[1], "w") as out:
    while n < target:
        line = json.dumps({"id": i, "text": f"{docs[i % len(docs)]}\n(fortune {i})"}) + "\n"
        out.write(line)
        n += len(line.encode())
        i += 1
print(f"bench prepare: {i} records, {n / 2**20:.0f} MB")
PY
bytes=$(stat -c %s "$work/corpus/records.jsonl")
off=(--set data.dedup=false --set data.near_dup_threshold=0 --set data.min_words=0 --set data.max_symbol_fraction=1
  --set data.max_digit_fraction=1 --set data.max_repeated_line_fraction=1 --set data.max_top_bigram_fraction=1)
run_moe() {  # $1: label, then more flags; prints "seconds tokens"
  local label=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  "$moe" data prepare configs/tiny.yaml --set data.corpus="$work/corpus" --set data.dir="$work/$label" \
    --set data.tokenizer="$tok" --set data.val_fraction=0.001 "$@" > "$work/$label.log"
  t1=$(date +%s.%N)
  python3 -c "import json; m = json.load(open('$work/$label/meta.json')); print($t1 - $t0, m['train_tokens'] + m['val_tokens'])"
}
read -r moe_s moe_tokens < <(run_moe moe_off "${off[@]}")
read -r moe_on_s moe_on_tokens < <(run_moe moe_on)
t0=$(date +%s.%N)
peer_tokens=$(deps/hf-venv/bin/python bench/prepare_peer.py "$work/corpus/records.jsonl" "$tok" "$work/peer")
t1=$(date +%s.%N)
peer_s=$(python3 -c "print($t1 - $t0)")
python3 - "$bytes" "$moe_s" "$moe_tokens" "$moe_on_s" "$moe_on_tokens" "$peer_s" "$peer_tokens" <<'PY'
import sys
b, ms, mt, os_, ot, ps, pt = (float(x) for x in sys.argv[1:])
row = lambda name, s, t: print(f"{name:<34} {b / 2**20 / s:7.2f} MB/s  {t / s:11.0f} tokens/s  ({s:.1f} s, {t:.0f} tokens)")
row("moe data prepare (filters off)", ms, mt)
row("moe data prepare (default filters)", os_, ot)
row("python json + sentencepiece", ps, pt)
print(f"moe / python: {ps / ms:.2f}x (filters off; tokens {mt:.0f} vs {pt:.0f})")
PY
