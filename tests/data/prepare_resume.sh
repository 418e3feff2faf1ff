#!/usr/bin/env bash
# A killed moe data prepare resumes where it stopped: kill -9 (every rank) once some files are
# scanned, once deduplication is done and once some files are encoded, each restart carrying
# on from the per-file work in data.dir/.prepare, the last restart with another rank count
# (1, not 2); the shards, tokenizer and meta.json must be byte-identical
# to an uninterrupted preparation. Prints how far each killed run had got.
# Usage: prepare_resume.sh MOE CONFIG WORKDIR
set -euo pipefail
moe=$1 config=$2 work=$3
rm -rf "$work" && mkdir -p "$work" && cd "$work"
fail() { echo "prepare_resume: $*" >&2; exit 1; }
common=(--set data.corpus=/usr/share/games/fortunes --set model.vocab_size=500)
mpirun -np 2 "$moe" data prepare "$config" "${common[@]}" --set data.dir=whole > whole.log
rm -rf killed
resumed=0
# Each kill waits for a point of the work: some files scanned, deduplication done, some files
# encoded (the next kill then lands inside that stage, the restart carrying on from it).
for point in 'scan_*.json' dedup.json 'tok_*.json'; do
  mpirun -np 2 "$moe" data prepare "$config" "${common[@]}" --set data.dir=killed --force > killed.log 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    [ -z "$(find killed -path "*/.prepare/$point" 2> /dev/null)" ] || break
    [ ! -e killed/meta.json ] || break
    sleep 0.05
  done
  pkill -9 -f -- "data.dir=killed" || true
  wait $pid 2> /dev/null || true
  if [ -e killed/meta.json ]; then
    echo "prepare_resume: the run to be killed at $point had finished"
    continue
  fi
  scans=$(find killed -path '*/.prepare/scan_*.json' | wc -l) encodes=$(find killed -path '*/.prepare/tok_*.json' | wc -l)
  echo "prepare_resume: killed at $point with $scans files scanned, $encodes encoded"
  resumed=$((resumed + 1))
done
[ "$resumed" -gt 0 ] || fail "no kill landed before the end; the corpus prepares too fast for this test"
"$moe" data prepare "$config" "${common[@]}" --set data.dir=killed --force > resumed.log
grep -h "resumed" resumed.log || true
for f in whole/*; do
  cmp -s "$f" "killed/$(basename "$f")" || fail "$(basename "$f") differs from the uninterrupted preparation"
done
[ ! -e killed/.prepare ] || fail "the work directory is left behind"
echo "prepare_resume: $resumed killed runs resumed; output identical to the uninterrupted one ($(ls whole | wc -l) files)"
