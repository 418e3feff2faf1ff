#!/usr/bin/env bash
# ctest wrapper of hf_check.py: runs it in deps/hf-venv, or skips visibly (exit 77) where that
# test-only environment was not installed (scripts/install-deps.sh --test, which
# scripts/test.sh runs).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="$root/deps/hf-venv/bin/python"
if [ ! -x "$py" ]; then
  echo "SKIPPED: no deps/hf-venv (scripts/install-deps.sh --test creates it)"
  exit 77
fi
exec env OMP_NUM_THREADS=1 "$py" "$root/tests/model/hf_check.py" "$@"
