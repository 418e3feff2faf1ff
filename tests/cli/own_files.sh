#!/usr/bin/env bash
# Directories are moe's to write only where nobody else is, and only moe's own files in them:
#   a data.dir holding a file prepare did not write is refused (one line), --force writes
#   beside it, and it survives either way; a checkpoint save leaves other *.tmp / *.bin alone;
#   a second writer of a data.dir or a checkpoint.dir (its lock held) fails in one line
#   naming the holder, and touches nothing.
# Usage: own_files.sh MOE CONFIG CORPUS WORKDIR
set -euo pipefail
moe=$1 config=$2 corpus=$3 work=$4
rm -rf "$work" && mkdir -p "$work/data" "$work/run"
cd "$work"
fail() { echo "own_files: $*" >&2; exit 1; }
one_line() {  # the command must fail with exit 2 and one stderr line matching $1
  local want=$1; shift
  if "$@" > out.txt 2> err.txt; then fail "succeeded: $*"; fi
  [ "$(wc -l < err.txt)" = 1 ] || { cat err.txt >&2; fail "not one line: $*"; }
  grep -Eq "$want" err.txt || { cat err.txt >&2; fail "expected /$want/"; }
}
set_data=(--set model.vocab_size=400 --set "data.corpus=$corpus" --set data.dir=data)
echo mine > data/notes.bin
one_line "data: holds 1 file\(s\) moe data prepare did not write \(e.g. notes.bin\)" \
  "$moe" data prepare "$config" "${set_data[@]}"
[ "$(cat data/notes.bin)" = mine ] || fail "notes.bin changed"
"$moe" data prepare "$config" "${set_data[@]}" --force > /dev/null
[ "$(cat data/notes.bin)" = mine ] && [ -f data/meta.json ] || fail "--force: notes.bin or meta.json"
# A second prepare while one holds data.dir's lock.
flock -n data/.moe.lock sleep 30 &
holder=$!
sleep 0.5
one_line "data.dir data is in use by .*; wait for it to end or choose another directory" \
  "$moe" data prepare "$config" "${set_data[@]}" --force
kill $holder; wait $holder 2> /dev/null || true
# Checkpoints: a user's files in the run directory stay; a second run on it is refused.
echo keep > run/user.tmp
echo keep > run/user.bin
train=("$moe" train "$config" --set model.vocab_size=400 --set train.steps=2 --set data.dir=data
  --set checkpoint.dir=run --set checkpoint.every=1)
"${train[@]}" > /dev/null
[ "$(cat run/user.tmp)" = keep ] && [ "$(cat run/user.bin)" = keep ] || fail "the save touched the user's files"
flock -n run/.moe.lock sleep 30 &
holder=$!
sleep 0.5
one_line "checkpoint.dir run is in use by .*" "${train[@]}" --set train.steps=3
kill $holder; wait $holder 2> /dev/null || true
[ "$(cat run/latest)" = step_00000002.h5 ] || fail "the refused run moved latest"
echo "own_files: foreign files refused and kept, both locks hold"
