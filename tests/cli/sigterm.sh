#!/usr/bin/env bash
# sigterm.sh DIR MOE_TRAIN...: a run told to stop (SIGTERM to mpirun, as a scheduler would)
# finishes its step on every rank, checkpoints, and says so in its summary (moe exits 0;
# mpirun, signalled itself, may report its own code); the same command then resumes from
# that step.
set -u
dir=$1; shift
rm -rf "$dir" && mkdir -p "$dir"
log=$dir/run.log err=$dir/run.err
# Few log lines: after SIGTERM mpirun stops forwarding output, and a rank blocked writing a
# full pipe would never reach the end of its step.
"$@" --set train.steps=1000000 --set train.log_every=50 --set checkpoint.dir="$dir/ckpt" > "$log" 2> "$err" &
pid=$!
for _ in $(seq 1 300); do grep -q "step  *50/" "$log" 2>/dev/null && break; sleep 0.1; done
kill -TERM "$pid"
wait "$pid"; rc=$?
echo "exit $rc"; tail -n 3 "$log"; cat "$err"
grep -Eq "^stopped +by SIGTERM after step [0-9]+; the same command resumes" "$log" || { echo "FAIL: no stop line"; exit 1; }
step=$(sed -n 's/^stopped  *by SIGTERM after step \([0-9]*\).*/\1/p' "$log")
[ "$(cat "$dir/ckpt/latest")" = "$(printf 'step_%08d.h5' "$step")" ] || { echo "FAIL: latest is not step $step"; exit 1; }
"$@" --set train.steps=$((step + 2)) --set checkpoint.dir="$dir/ckpt" > "$log" 2> "$err" || { cat "$err"; exit 1; }
grep -q "resumed from .*step_$(printf '%08d' "$step").h5 (step $step" "$log" || { echo "FAIL: did not resume"; cat "$log"; exit 1; }
echo "ok: stopped at step $step, resumed"
