#!/usr/bin/env bash
# watchdog.sh MOE_TRAIN...: rank 1 hangs at step 3 (debug.hang_at_step); within
# train.watchdog_s the job ends non-zero, and one line says where: the hung rank, outside any
# collective, names itself as the one that stalled the others.
set -u
err=$("$@" --set train.steps=50 --set checkpoint.dir= --set debug.hang_at_step=3 --set debug.hang_rank=1 \
  --set train.watchdog_s=2 2>&1 >/dev/null); rc=$?
echo "exit $rc"; printf '%s\n' "$err" | grep '^moe'
[ "$rc" -ne 0 ] || { echo "FAIL: expected a non-zero exit"; exit 1; }
printf '%s\n' "$err" | grep -Eq '^moe: watchdog on rank 1: no progress for [0-9.]+ s at step 3, computing, outside any collective; this rank stalled the others' ||
  printf '%s\n' "$err" | grep -Eq '^moe: watchdog on rank 0: no progress for [0-9.]+ s at step 3, inside all_reduce_sum on the dp communicator; rank 1 stalled the others' ||
  { echo "FAIL: no watchdog line naming the stalled rank, the step and the operation"; exit 1; }
[ "$(printf '%s\n' "$err" | grep -c '^moe')" -eq 1 ] || { echo "FAIL: more than one moe line"; exit 1; }
echo "ok"
