#!/usr/bin/env bash
# kill_restart.sh DIR MOE_TRAIN...: SIGKILL one rank at a random moment (5 seeds), restart
# the same command until the run completes: the final state equals an uninterrupted run's
# bit for bit, and every checkpoint on disk after every kill opens and passes its checksums.
# KILL_RESTART_EVERY: steps between checkpoints (default 20).
set -u
dir=$1; shift
here=$(cd "$(dirname "$0")/.." && pwd)
moe_bin=""
for a in "$@"; do case "$a" in */moe) moe_bin=$a ;; esac; done
steps=200
every=${KILL_RESTART_EVERY:-20}
run() { "$@" --set train.steps=$steps --set train.log_every=100 --set checkpoint.every=$every --set checkpoint.keep=100; }
rm -rf "$dir" && mkdir -p "$dir"
run "$@" --set checkpoint.dir="$dir/straight" > "$dir/straight.log" 2>&1 || { cat "$dir/straight.log"; exit 1; }
final=$(printf 'step_%08d.h5' $steps)
for seed in 1 2 3 4 5; do
  RANDOM=$seed
  ck=$dir/seed$seed
  kills=0 latest_after="" during_write=0
  for attempt in 1 2 3 4 5 6; do
    run "$@" --set checkpoint.dir="$ck" > "$ck.log" 2>&1 &
    pid=$!
    # A moment somewhere in the run (start-up included), then one of its ranks dies.
    sleep "$(printf '%d.%d' $((RANDOM % 2)) $((RANDOM % 10)))"
    victim=$(pgrep -P "$pid" | shuf -n 1 --random-source=<(yes "$seed$attempt") 2>/dev/null || true)
    if [ -n "$victim" ] && [ $kills -lt 2 ]; then kill -KILL "$victim" 2>/dev/null && kills=$((kills + 1)); fi
    wait "$pid"; rc=$?
    # A write that was in flight when its rank died leaves its temp file (never committed).
    ls "$ck"/step_*.h5.tmp > /dev/null 2>&1 && during_write=$((during_write + 1))
    # Every checkpoint present must open and pass its checksums.
    for f in "$ck"/step_*.h5; do
      [ -e "$f" ] || continue
      "$moe_bin" ckpt inspect "$f" > /dev/null 2>&1 || { echo "FAIL: seed $seed: $f is unreadable after a kill"; exit 1; }
    done
    [ $rc -eq 0 ] && [ -e "$ck/$final" ] && break
    latest_after="$latest_after $(cat "$ck/latest" 2>/dev/null || echo none)"
  done
  [ -e "$ck/$final" ] || { echo "FAIL: seed $seed: the run did not complete"; tail -5 "$ck.log"; exit 1; }
  /usr/bin/python3 "$here/checkpoint/same_state.py" "$dir/straight/$final" "$ck/$final" ||
    { echo "FAIL: seed $seed: state differs from the uninterrupted run"; exit 1; }
  echo "seed $seed: $kills kill(s) ($during_write during a checkpoint write), latest after each:$latest_after;" \
    "$attempt launch(es), final state bitwise equal"
done
echo "ok"
