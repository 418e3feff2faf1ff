#!/usr/bin/env bash
# async_checkpoint_failure.sh DIR SRC MOE NP CONFIG...: a checkpoint written behind the steps
# fails (its file removed while each rank's writer waits, debug.slow_checkpoint_ms): the run
# stops at a step after it with one line on stderr under mpirun -np NP (scripts/mpi-env.sh)
# saying the previous checkpoint stays the latest, exits non-zero, and commits nothing.
set -u
dir=$1 src=$2 moe=$3 np=$4; shift 4
fail() { echo "FAIL: $*"; exit 1; }
source "$src/scripts/mpi-env.sh"
rm -rf "$dir" && mkdir -p "$dir"
mpirun -np "$np" "$moe" train "$@" --set train.steps=40 --set train.log_every=100 --set checkpoint.every=5 \
  --set checkpoint.async=true --set debug.slow_checkpoint_ms=2000 --set checkpoint.dir="$dir/run" \
  > "$dir/out.log" 2> "$dir/err.log" &
pid=$!
tmp=""
for _ in $(seq 1 300); do
  tmp=$(ls "$dir"/run/step_*.h5.tmp 2> /dev/null | head -1)
  [ -n "$tmp" ] && break
  sleep 0.05
done
[ -n "$tmp" ] || { kill "$pid"; fail "no checkpoint write started"; }
rm -f "$tmp"
wait "$pid"; rc=$?
[ "$rc" -ne 0 ] || fail "the run ended well although its checkpoint failed"
lines=$(wc -l < "$dir/err.log")
[ "$lines" -eq 1 ] || fail "stderr holds $lines lines: $(cat "$dir/err.log")"
grep -q "the previous checkpoint stays the latest" "$dir/err.log" || fail "unexpected error: $(cat "$dir/err.log")"
[ ! -e "$dir/run/latest" ] || fail "a checkpoint was committed: $(cat "$dir/run/latest")"
ls "$dir"/run/step_*.h5 > /dev/null 2>&1 && fail "a step file exists"
echo "ok: exit $rc, one line: $(cat "$dir/err.log")"
