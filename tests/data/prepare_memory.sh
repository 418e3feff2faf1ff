#!/usr/bin/env bash
# moe data prepare streams: its peak resident memory does not grow with the corpus. Two corpora
# of unique generated documents (fortune words), 40 MB and 200 MB (half of the big one's files
# gzipped), prepare with the same tokenizer sample (data.tokenizer_sample_mb = 1) and sorters of
# 1 MiB (data.sort_mb); the big one's peak RSS must be within 24 MB of the small one's. Both are
# past the sizes where the fixed buffers fill (a sorter's keys, a shard's 4 Mi tokens), so what
# is left to grow is what would grow with the corpus: measured 304 -> 321 MB, the allocator's
# heap levelling off (296 MB at 40 MB of text, 313 at 100, 318 at 200; a 1 GB corpus in
# bench/prepare.sh peaks lower still), where holding the corpus would add 160 MB. (The process's floor, ~280 MB, is its libraries, most of it the
# CUDA ones.) Usage: prepare_memory.sh MOE CONFIG WORKDIR
set -euo pipefail
moe=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work/small" "$work/big" && cd "$work"
fail() { echo "prepare_memory: $*" >&2; exit 1; }
/usr/bin/python3 - <<'PY'
import gzip, random
rng = random.Random(7)
words = open("/usr/share/games/fortunes/fortunes", encoding="utf-8").read().split()
def write(path, mb, seq):
    out, n = [], 0
    while n < mb * 1_000_000:
        doc = f"Document {seq + len(out)}. " + " ".join(rng.choice(words) for _ in range(rng.randint(40, 120)))
        out.append(doc)
        n += len(doc) + 3
    text = "\n%\n".join(out) + "\n"
    if path.endswith(".gz"):
        with gzip.open(path, "wt", compresslevel=1) as f: f.write(text)
    else:
        open(path, "w").write(text)
    return seq + len(out)
seq = 0
for i in range(10): seq = write(f"small/{i:02d}.txt", 4, seq)
for i in range(50): seq = write(f"big/{i:02d}.txt" + (".gz" if i % 2 else ""), 4, seq)
PY
common=(--set model.vocab_size=500 --set data.tokenizer_sample_mb=1 --set data.sort_mb=1)
for c in small big; do
  /usr/bin/time -f "%M" -o $c.rss "$moe" data prepare "$config" "${common[@]}" --set data.corpus=$c --set data.dir=data_$c > $c.log
done
small=$(( $(cat small.rss) / 1024 )) big=$(( $(cat big.rss) / 1024 ))
grep -h "documents (" small.log big.log
echo "prepare_memory: peak RSS ${small} MB for 40 MB of text, ${big} MB for 200 MB"
[ "$big" -le $((small + 24)) ] || fail "peak RSS grew from ${small} MB to ${big} MB with a corpus 5 times larger"
