#!/usr/bin/env bash
# nan_drill.sh DIR MOE_TRAIN...: fault drills with NaN gradients (debug.nan_at_step).
# 1. One bad step: skipped (no update), logged and counted; the run finishes with finite losses.
# 2. Three in a row with train.max_skipped_steps = 3: the run stops with one line and a
#    non-zero exit, nothing saved from the bad steps; the last checkpoint (step 4) is latest,
#    intact, and resumes.
set -u
dir=$1; shift
rm -rf "$dir" && mkdir -p "$dir"
log=$dir/run.log err=$dir/run.err
"$@" --set train.steps=8 --set train.log_every=1 --set debug.nan_at_step=5 --set checkpoint.dir= > "$log" 2> "$err" || { cat "$err"; exit 1; }
grep -q "step 5 skipped: loss .* and gradient norm nan; 1 in a row, 1 in all" "$log" || { echo "FAIL: no skip line"; cat "$log"; exit 1; }
grep -Eq "^skipped steps +1 " "$log" || { echo "FAIL: no count in the summary"; exit 1; }
grep -Eq "step +8/8 \| loss [0-9]" "$log" || { echo "FAIL: the run did not go on with finite losses"; exit 1; }

"$@" --set train.steps=20 --set train.log_every=1 --set debug.nan_at_step=5 --set debug.nan_steps=3 \
  --set train.max_skipped_steps=3 --set checkpoint.every=2 --set checkpoint.dir="$dir/ckpt" > "$log" 2> "$err"
rc=$?
echo "exit $rc"; cat "$err"
[ "$rc" -ne 0 ] || { echo "FAIL: expected a non-zero exit"; exit 1; }
[ "$(grep -c '^moe: error: .*step 7: 3 steps in a row skipped (train.max_skipped_steps)' "$err")" -eq 1 ] ||
  { echo "FAIL: expected one error line naming step 7"; exit 1; }
[ "$(cat "$dir/ckpt/latest")" = "step_00000004.h5" ] || { echo "FAIL: latest is $(cat "$dir/ckpt/latest"), not step 4"; exit 1; }
[ ! -e "$dir/ckpt/step_00000006.h5" ] || { echo "FAIL: a checkpoint was saved from skipped steps"; exit 1; }
"$@" --set train.steps=6 --set checkpoint.dir="$dir/ckpt" > "$log" 2> "$err" || { cat "$err"; exit 1; }
grep -q "resumed from .*step_00000004.h5 (step 4" "$log" || { echo "FAIL: did not resume from step 4"; exit 1; }
echo "ok: skipped, stopped at step 7, resumed from step 4"
