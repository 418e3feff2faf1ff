#!/usr/bin/env bash
# moe data prepare under mpirun: the ranks split the input files, deduplication is global, and
# the output (shards, tokenizer, meta.json) is byte-identical for 1, 2 and 4 ranks. The corpus
# mixes plain text, JSONL.gz and JSONL.zst files, with exact and near duplicates of documents
# placed in other files (so held by other ranks) and one bad JSON line; the duplicate counts
# must be those of the copies made. Usage: prepare_ranks.sh MOE CONFIG WORKDIR
set -euo pipefail
moe=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work/corpus" && cd "$work"
fail() { echo "prepare_ranks: $*" >&2; exit 1; }
fortunes=/usr/share/games/fortunes
for f in art computers definitions linux pets science; do cp $fortunes/$f corpus/$f.txt; done
/usr/bin/python3 - <<'PY'
import gzip, json, random, subprocess
rng = random.Random(5)
def docs(name):
    return [d for d in open(f"/usr/share/games/fortunes/{name}", encoding="utf-8").read().split("\n%\n") if len(d.split()) > 30]
food, love = docs("food"), docs("love")
with gzip.open("corpus/food.jsonl.gz", "wt") as f:
    for d in food: f.write(json.dumps({"text": d, "id": 1}) + "\n")
    f.write("{not json\n")
with open("corpus/love.jsonl", "w") as f:
    for d in love: f.write(json.dumps({"text": d}) + "\n")
subprocess.run(["zstd", "-q", "--rm", "corpus/love.jsonl"], check=True)
# Copies in a later file: 20 exact (of food, one with other case and spacing) and 20 near
# (of love: one word of 30+ changed).
exact = [d.upper() if i == 0 else d.replace(" ", "  ") if i == 1 else d for i, d in enumerate(food[:20])]
near = []
for d in love[:20]:
    w = d.split(" ")
    w[len(w) // 2] = "zebra"
    near.append(" ".join(w))
open("corpus/zz_copies.txt", "w").write("\n%\n".join(exact + near) + "\n")
PY
common=(--set data.max_bad_fraction=0.01 --set model.vocab_size=500 --set data.near_dup_threshold=0.7)
for np in 1 2 4; do
  mpirun -np $np "$moe" data prepare "$config" "${common[@]}" --set data.corpus=corpus --set data.dir=np$np > np$np.log
done
cat np1.log
grep -q "1 bad records skipped (the first: corpus/food.jsonl.gz:" np1.log || fail "the bad JSON line is not counted"
exact=$(/usr/bin/python3 -c "import json; print(json.load(open('np1/meta.json'))['filters']['exact_duplicates'])")
near=$(/usr/bin/python3 -c "import json; print(json.load(open('np1/meta.json'))['filters']['near_duplicates'])")
[ "$exact" -ge 20 ] || fail "$exact exact duplicates, not the 20 copies made"
[ "$near" -ge 20 ] || fail "$near near duplicates, not the 20 copies made"
for np in 2 4; do
  for f in np1/*; do
    cmp -s "$f" "np$np/$(basename "$f")" || fail "$(basename "$f") differs between 1 and $np ranks"
  done
  [ ! -e np$np/.prepare ] || fail "the work directory is left behind"
done
echo "prepare_ranks: identical output from 1, 2 and 4 ranks ($(ls np1 | wc -l) files; $exact exact and $near near duplicates)"
