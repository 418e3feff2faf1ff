#!/usr/bin/env bash
# One huge document (8 MB, one line per 80 bytes, no separators) must prepare in bounded
# memory: it is cut into parts of data.max_document_bytes (1 MiB) and counted, and the peak
# resident memory of moe data prepare stays under 600 MB (1.5 GB uncut, measured: the tokenizer's
# lattice over the whole document). Usage: huge_document.sh MOE CONFIG WORKDIR
set -euo pipefail
moe=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work/corpus" && cd "$work"
fail() { echo "huge_document: $*" >&2; exit 1; }
/usr/bin/python3 - <<'PY'
import random
rng = random.Random(3)
words = open("/usr/share/games/fortunes/fortunes", encoding="utf-8").read().split()
out, n = [], 0
while n < 8_000_000:
    line = " ".join(rng.choice(words) for _ in range(12))
    out.append(line)
    n += len(line) + 1
open("corpus/huge.txt", "w").write("\n".join(out) + "\n")
PY
cp /usr/share/games/fortunes/fortunes corpus/small.txt
/usr/bin/time -f "%M" -o rss.txt "$moe" data prepare "$config" --set data.corpus=corpus --set data.dir=data \
  --set model.vocab_size=400 > prepare.log
grep -q "1 documents over data.max_document_bytes cut into 8 parts" prepare.log || { cat prepare.log; fail "not cut"; }
rss_mb=$(( $(cat rss.txt) / 1024 ))
echo "huge_document: 8 MB document cut into 8 parts; peak RSS ${rss_mb} MB"
[ "$rss_mb" -lt 600 ] || fail "peak RSS ${rss_mb} MB, over 600 MB"
