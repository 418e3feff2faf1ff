#!/usr/bin/env bash
# moe data prepare's throughput against the peer a user would write: Python reading the same
# JSONL with json, encoding with the sentencepiece package (the same tokenizer.model) and
# writing uint16 shards with numpy; one process each, same machine, same tokenizer. The
# corpus: MB megabytes (default 1024) of JSONL made from the fortune databases (each record a
# fortune with a serial number, so no two are equal). moe runs with its filters off (the peer
# has none: the ratio compares reading, encoding and writing), then once with its defaults on,
# each with 1 and 2 ranks (mpirun; the 2-rank output must equal the 1-rank one). Prints MB/s of
# input, tokens/s and peak RSS for each, the ratio, and the parallel efficiency.
# Usage: bench/prepare.sh [MB]  (after scripts/build.sh and scripts/install-deps.sh --test: the peer runs in
# deps/hf-venv, which has the sentencepiece package)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-1024}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
moe=build/trainer/moe work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
echo "bench prepare: ${mb} MB of JSONL, $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
[ -f runs/data/fortunes/meta.json ] || "$moe" data prepare configs/tiny.yaml > /dev/null
tok=runs/data/fortunes/tokenizer.model
mkdir -p "$work/corpus"
/usr/bin/python3 - "$work/corpus" "$mb" <<'PY'
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
files = 16  # (corpora come sharded; ranks share files)
for k in range(files):
    with open(f"{sys.argv[1]}/records_{k:02d}.jsonl", "w") as out:
        while n < target * (k + 1) // files:
            line = json.dumps({"id": i, "text": f"{docs[i % len(docs)]}\n(fortune {i})"}) + "\n"
            out.write(line)
            n += len(line.encode())
            i += 1
print(f"bench prepare: {i} records, {n / 2**20:.0f} MB in {files} files")
PY
bytes=$(cat "$work"/corpus/*.jsonl | wc -c)
off=(--set data.dedup=false --set data.near_dup_threshold=0 --set data.min_words=0 --set data.max_symbol_fraction=1
  --set data.max_digit_fraction=1 --set data.max_repeated_line_fraction=1 --set data.max_top_bigram_fraction=1)
source scripts/mpi-env.sh
run_moe() {  # $1: label, $2: ranks, then more flags; prints "seconds tokens peak-RSS-MB"
  local label=$1 np=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/$label.rss" mpirun -np "$np" "$moe" data prepare configs/tiny.yaml \
    --set data.corpus="$work/corpus" --set data.dir="$work/$label" --set data.tokenizer="$tok" \
    --set data.val_fraction=0.001 "$@" > "$work/$label.log"
  t1=$(date +%s.%N)
  python3 -c "import json; m = json.load(open('$work/$label/meta.json')); print($t1 - $t0, m['train_tokens'] + m['val_tokens'], $(cat "$work/$label.rss") // 1024)"
}
# (/usr/bin/time's peak is mpirun's or its largest child's: a rank's)
read -r moe_s moe_tokens moe_rss < <(run_moe moe_off 1 "${off[@]}")
read -r moe2_s moe2_tokens moe2_rss < <(run_moe moe_off_2 2 "${off[@]}")
cmp -s "$work/moe_off/train_00000.bin" "$work/moe_off_2/train_00000.bin" || echo "bench prepare: 1 and 2 ranks differ!"
read -r moe_on_s moe_on_tokens moe_on_rss < <(run_moe moe_on 1)
read -r moe_on2_s moe_on2_tokens moe_on2_rss < <(run_moe moe_on_2 2)
t0=$(date +%s.%N)
peer_tokens=$(/usr/bin/time -f "%M" -o "$work/peer.rss" deps/hf-venv/bin/python bench/prepare_peer.py \
  "$work/corpus" "$tok" "$work/peer")
t1=$(date +%s.%N)
peer_s=$(python3 -c "print($t1 - $t0)") peer_rss=$(($(cat "$work/peer.rss") / 1024))
python3 - "$bytes" "$moe_s" "$moe_tokens" "$moe_rss" "$moe2_s" "$moe2_tokens" "$moe2_rss" "$moe_on_s" "$moe_on_tokens" \
  "$moe_on_rss" "$moe_on2_s" "$moe_on2_tokens" "$moe_on2_rss" "$peer_s" "$peer_tokens" "$peer_rss" <<'PY'
import sys
v = [float(x) for x in sys.argv[1:]]
b = v[0]
def row(name, s, t, rss):
    print(f"{name:<42} {b / 2**20 / s:7.2f} MB/s  {t / s:11.0f} tokens/s  ({s:.1f} s, {t:.0f} tokens, peak RSS {rss:.0f} MB)")
row("moe data prepare, 1 rank (filters off)", *v[1:4])
row("moe data prepare, 2 ranks (filters off)", *v[4:7])
row("moe data prepare, 1 rank (default filters)", *v[7:10])
row("moe data prepare, 2 ranks (default filters)", *v[10:13])
row("python json + sentencepiece", *v[13:16])
print(f"moe / python, 1 process each: {v[13] / v[1]:.2f}x (filters off; tokens {v[2]:.0f} vs {v[14]:.0f})")
print(f"2 ranks: {v[1] / v[4]:.2f}x one rank's speed, parallel efficiency {v[1] / v[4] / 2:.0%} (filters off); "
      f"{v[7] / v[10]:.2f}x with the default filters")
PY
