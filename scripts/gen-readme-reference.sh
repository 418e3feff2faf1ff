#!/usr/bin/env bash
# Regenerates README.md's config reference from `moe config reference` (after a build).
set -euo pipefail
cd "$(dirname "$0")/.."
table=$(build/trainer/moe config reference)
python3 - "$table" <<'PY'
import sys
begin, end = "<!-- config-reference:begin -->\n", "<!-- config-reference:end -->"
text = open("README.md").read()
a, b = text.index(begin) + len(begin), text.index(end)
open("README.md", "w").write(text[:a] + sys.argv[1] + "\n" + text[b:])
PY
