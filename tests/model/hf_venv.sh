# Sourced by the Hugging Face checks: $root (the source tree) and $py (deps/hf-venv's python),
# or a visible skip (exit 77) where that test-only environment was not installed
# (scripts/install-deps.sh --test, which scripts/test.sh runs).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="$root/deps/hf-venv/bin/python"
if [ ! -x "$py" ]; then
  echo "SKIPPED: no deps/hf-venv (scripts/install-deps.sh --test creates it)"
  exit 77
fi
export OMP_NUM_THREADS=1
