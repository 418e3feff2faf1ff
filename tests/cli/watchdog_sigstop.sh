#!/usr/bin/env bash
# watchdog_sigstop.sh MPIEXEC MOE_TRAIN...: four ranks train; rank 2 is stopped (SIGSTOP: its
# watchdog thread stops too). Within train.watchdog_s the job ends non-zero, and one moe line
# names rank 2 as the rank that stalled the others (from the heartbeats the ranks share).
set -u
mpiexec=$1; shift
work=watchdog_sigstop
rm -rf "$work" && mkdir -p "$work"
"$mpiexec" -np 4 "$@" --set train.steps=100000 --set train.log_every=1000000 --set checkpoint.dir="$work/run" \
  --set checkpoint.every=0 --set train.watchdog_s=3 > /dev/null 2> "$work/err" &
job=$!
pid=""
for _ in $(seq 1 120); do  # rank 2's process, once training has started
  for p in $(pgrep -f "moe train" || true); do
    if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=2' && [ -d "$work/run/.moe.heartbeat" ] &&
       [ -e "$work/run/.moe.heartbeat/rank_00002" ]; then pid=$p; fi
  done
  [ -n "$pid" ] && break
  sleep 0.5
done
[ -n "$pid" ] || { echo "FAIL: rank 2 never started training"; kill "$job" 2>/dev/null; exit 1; }
sleep 1
kill -STOP "$pid"
rc=0
timeout 60 bash -c "wait $job" 2>/dev/null; wait "$job"; rc=$?
kill -KILL "$pid" 2>/dev/null  # (stopped: it never runs again)
echo "exit $rc"; grep '^moe' "$work/err"
[ "$rc" -ne 0 ] || { echo "FAIL: expected a non-zero exit"; exit 1; }
grep -Eq '^moe: watchdog on rank [013]: no progress for [0-9.]+ s at step [0-9]+, .*; rank 2 stalled the others' "$work/err" ||
  { echo "FAIL: no watchdog line naming rank 2"; exit 1; }
[ "$(grep -c '^moe' "$work/err")" -eq 1 ] || { echo "FAIL: more than one moe line"; exit 1; }
echo "ok"
