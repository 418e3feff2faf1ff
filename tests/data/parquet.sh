#!/usr/bin/env bash
# Parquet corpora (data/parquet.cpp) against the same texts as JSONL: pyarrow (deps/arrow)
# writes the documents into Parquet files of several row groups, string and large_string
# columns, snappy and zstd pages; moe data prepare of them must give byte-identical shards to
# the same records as JSONL. Then the damaged: a truncated file (no footer), a missing text
# column and null texts are counted as bad records naming file and row group / row, fatal past
# data.max_bad_fraction in one line.
# Usage: parquet.sh MOE CONFIG WORKDIR; skips (77) when this moe has no Arrow (deps/arrow) or
# there is no deps/hf-venv (its NumPy 2 runs the pyarrow module; Debian's 1.24 cannot).
set -euo pipefail
moe=$1 config=$2 work=$3
source "$(dirname "$0")/../model/hf_venv.sh"
[ -f "$root/deps/arrow/VERSION" ] || { echo "SKIPPED: no deps/arrow (scripts/install-deps.sh unpacks it)"; exit 77; }
rm -rf "$work" && mkdir -p "$work/pq" "$work/jsonl" "$work/bad" && cd "$work"
fail() { echo "parquet: $*" >&2; exit 1; }
PYTHONPATH="$root/deps/arrow" "$py" - <<'PY'
import json
import pyarrow as pa, pyarrow.parquet as pq
docs = [d.strip() for d in open("/usr/share/games/fortunes/fortunes", encoding="utf-8").read().split("\n%\n") if d.strip()]
docs += ["Unicode: naïve café 你好 🙂", "tabs\tand  spaces"]
half = len(docs) // 2
pq.write_table(pa.table({"id": list(range(half)), "text": docs[:half]}), "pq/a.parquet", row_group_size=37,
               compression="snappy")
pq.write_table(pa.table({"text": pa.array(docs[half:], pa.large_string())}), "pq/b.parquet", row_group_size=50,
               compression="zstd")
with open("jsonl/a.jsonl", "w") as f:
    for d in docs:
        f.write(json.dumps({"text": d}) + "\n")
good = open("pq/a.parquet", "rb").read()
open("bad/truncated.parquet", "wb").write(good[: len(good) // 2])
pq.write_table(pa.table({"body": ["no text column here"]}), "bad/other_column.parquet")
pq.write_table(pa.table({"text": ["fine one", None, "fine two", None]}), "bad/nulls.parquet")
print(f"parquet: {len(docs)} documents in 2 files ({half} and {len(docs) - half} rows)")
PY
set_=(--set model.vocab_size=400)  # the same filters see the same documents in the same order
"$moe" data prepare "$config" "${set_[@]}" --set data.corpus=pq --set data.dir=from_pq > pq.log
"$moe" data prepare "$config" "${set_[@]}" --set data.corpus=jsonl --set data.dir=from_jsonl > jsonl.log
for f in from_jsonl/*.bin from_jsonl/tokenizer.model; do
  cmp "$f" "from_pq/$(basename "$f")" || fail "$(basename "$f") differs between Parquet and JSONL"
done
echo "parquet: shards identical to the JSONL preparation ($(ls from_pq/*.bin | wc -l) shards)"
cp pq/*.parquet bad/
if "$moe" data prepare "$config" "${set_[@]}" --set data.corpus=bad --set data.dir=from_bad > bad.log 2> bad.err; then
  fail "damaged Parquet accepted at data.max_bad_fraction = 0"
fi
[ "$(wc -l < bad.err)" = 1 ] || { cat bad.err; fail "not one line"; }
grep -q "bad/nulls.parquet row 1: the text is null" bad.err || { cat bad.err; fail "first bad record not named"; }
grep -q "4 of .* records bad" bad.err || { cat bad.err; fail "bad records not counted: nulls 2, column 1, truncated 1"; }
"$moe" data prepare "$config" "${set_[@]}" --set data.corpus=bad --set data.dir=from_bad --set data.max_bad_fraction=0.01 \
  > bad_ok.log
grep -q "4 bad" bad_ok.log || { cat bad_ok.log; fail "the report does not count 4 bad records"; }
echo "parquet: damaged files counted (4 bad records) and named"
