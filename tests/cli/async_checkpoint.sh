#!/usr/bin/env bash
# async_checkpoint.sh DIR MOE_TRAIN...: checkpoints written behind the training steps
# (checkpoint.async) hold bit for bit what the synchronous run's hold, at every step saved,
# though each writer waits 100 ms before writing (debug.slow_checkpoint_ms) while the steps go
# on changing the weights; and some were committed steps after the one they hold.
set -u
dir=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "FAIL: $*"; exit 1; }
rm -rf "$dir" && mkdir -p "$dir"
for async in false true; do
  "$@" --set train.steps=40 --set train.log_every=100 --set checkpoint.every=5 --set checkpoint.keep=100 \
    --set checkpoint.async=$async --set debug.slow_checkpoint_ms=$([ $async = true ] && echo 100 || echo 0) \
    --set checkpoint.dir="$dir/$async" > "$dir/$async.log" 2>&1 ||
    { cat "$dir/$async.log"; fail "the run with checkpoint.async=$async failed"; }
done
n=0
for f in "$dir"/false/step_*.h5; do
  b=$(basename "$f")
  [ -e "$dir/true/$b" ] || fail "$b is missing from the asynchronous run"
  /usr/bin/python3 "$here/checkpoint/same_state.py" "$f" "$dir/true/$b" > /dev/null || fail "$b differs"
  n=$((n + 1))
done
[ "$n" -eq 8 ] || fail "$n checkpoints, expected 8"
[ "$(cat "$dir/true/latest")" = "$(cat "$dir/false/latest")" ] || fail "the latest pointers differ"
# "checkpoint DIR/step_00000005.h5 (..., committed after step 9)": later than the step it holds.
later=$(sed -n 's/.*step_0*\([0-9]*\)\.h5 .*committed after step \([0-9]*\)).*/\1 \2/p' "$dir/true.log" |
  awk '$2 > $1' | wc -l)
[ "$later" -ge 1 ] || fail "no checkpoint was committed after later steps: $(grep checkpoint "$dir/true.log")"
echo "ok: $n checkpoints bitwise equal; $later committed steps after the one they hold"
