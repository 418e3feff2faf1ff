#!/usr/bin/env bash
# expect_failure.sh REGEX COMMAND...: passes when COMMAND exits non-zero and stderr holds
# exactly one line from moe ("moe: ..."), matching REGEX: the "fail loud" contract of the
# command line. (mpirun adds its own banner around it; that is not ours to count.)
set -u
regex=$1; shift
err=$("$@" 2>&1 >/dev/null); rc=$?
echo "exit $rc; stderr: $err"
ours=$(printf '%s\n' "$err" | grep -E '^moe' || true)
[ "$rc" -ne 0 ] || { echo "FAIL: expected a non-zero exit"; exit 1; }
[ "$(printf '%s\n' "$ours" | grep -c .)" -eq 1 ] || { echo "FAIL: expected one line from moe on stderr"; exit 1; }
printf '%s\n' "$ours" | grep -Eq -- "$regex" || { echo "FAIL: stderr does not match: $regex"; exit 1; }
