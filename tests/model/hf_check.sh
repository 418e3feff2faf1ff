#!/usr/bin/env bash
# ctest wrapper of hf_check.py: runs it in deps/hf-venv (tests/model/hf_venv.sh).
set -euo pipefail
source "$(dirname "$0")/hf_venv.sh"
exec "$py" "$root/tests/model/hf_check.py" "$@"
