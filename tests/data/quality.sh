#!/usr/bin/env bash
# The fastText quality classifier in moe data prepare: trained from labelled lines (fortunes
# as __label__hq, generated spam as __label__lq), it must drop the held-out spam of a corpus
# mixing both and keep its held-out fortunes (>= 95% each way), count both and print the
# score histogram; the saved model applied again (data.quality_model) must select the same;
# a label the model lacks is one line naming it.
# Usage: quality.sh MOE CONFIG WORKDIR
set -euo pipefail
moe=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work/corpus" && cd "$work"
fail() { echo "quality: $*" >&2; exit 1; }
/usr/bin/python3 - <<'PY'
import random
rng = random.Random(7)
spam_words = ("buy cheap pills now click here free money winner casino bonus offer limited deal best price "
              "discount order online viagra crypto giveaway act fast guaranteed").split()
def spam():
    return " ".join(rng.choice(spam_words) for _ in range(rng.randint(12, 30)))
fortunes = [d.strip() for d in open("/usr/share/games/fortunes/fortunes", encoding="utf-8").read().split("\n%\n")
            if len(d.split()) >= 5]
rng.shuffle(fortunes)
train, held = fortunes[:300], fortunes[300:]
with open("labelled.txt", "w") as f:
    for d in train:
        f.write("__label__hq " + " ".join(d.split()) + "\n")
    for _ in range(300):
        f.write("__label__lq " + spam() + "\n")
with open("corpus/mixed.txt", "w") as f:
    f.write("\n%\n".join(held + [spam() for _ in range(len(held))]) + "\n")
print(f"quality: trained on 300 + 300 lines; the corpus holds {len(held)} fortunes and {len(held)} spam")
PY
held=$(grep -c '^%$' corpus/mixed.txt); held=$(( (held + 1) / 2 ))
set_=(--set model.vocab_size=400 --set data.corpus=corpus --set data.near_dup_threshold=0 --set data.dedup=false)
"$moe" data prepare "$config" "${set_[@]}" --set data.dir=trained --set data.quality_train=labelled.txt > trained.log
grep -q "quality classifier: .* below the threshold, scores by tenths \[" trained.log || { cat trained.log; fail "no histogram line"; }
[ -f trained/quality.bin ] || fail "no trained/quality.bin"
python3 - "$held" trained/meta.json <<'PY'
import json, sys
held, meta = int(sys.argv[1]), json.load(open(sys.argv[2]))["filters"]
low, kept = meta["low_quality"], meta["kept"]
print(f"quality: {low} of {2 * held} documents below the threshold, {kept} kept; histogram {meta['quality_histogram']}")
assert 0.95 * held <= low <= 1.05 * held, (low, held)
assert abs(kept - held) <= 0.05 * held, (kept, held)
assert sum(meta["quality_histogram"]) == low + kept  # what the rules left was scored
PY
"$moe" data prepare "$config" "${set_[@]}" --set data.dir=applied --set data.quality_model=trained/quality.bin > applied.log
cmp trained/train_00000.bin applied/train_00000.bin || fail "the saved model selects otherwise"
if "$moe" data prepare "$config" "${set_[@]}" --set data.dir=bad --set data.quality_model=trained/quality.bin \
  --set data.quality_label=__label__nope > /dev/null 2> bad.err; then fail "a missing label was accepted"; fi
[ "$(wc -l < bad.err)" = 1 ] && grep -q "trained/quality.bin: the quality model has no label '__label__nope'" bad.err \
  || { cat bad.err; fail "expected one line naming the label"; }
echo "quality: ok"
