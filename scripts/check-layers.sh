#!/usr/bin/env bash
# Fails when a source file includes a header from a folder above its own. The order, bottom
# to top, is docs/ARCHITECTURE.md's "Layers"; bench/ and tests/ sit on top and may include
# anything. Run from anywhere: bash scripts/check-layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
layers=(kernels config comm data model parallel checkpoint plan trainer)
declare -A level
for i in "${!layers[@]}"; do level[${layers[$i]}]=$i; done
bad=0
for dir in "${layers[@]}"; do
  while IFS= read -r -d '' file; do
    while IFS=: read -r line target; do
      [[ -n "${level[$target]+x}" ]] || continue
      if (( level[$target] > level[$dir] )); then
        echo "$file:$line: $dir/ includes $target/, which sits above it (order: ${layers[*]})"
        bad=1
      fi
    done < <(grep -n '^#include "' "$file" | sed -E 's|^([0-9]+):#include "([a-z_]+)/.*|\1:\2|' | grep -E '^[0-9]+:[a-z_]+$' || true)
  done < <(find "$dir" -type f \( -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \) -print0)
done
if (( bad )); then echo "check-layers: dependencies must point down; move the shared piece lower or the includer higher"; exit 1; fi
echo "check-layers: ${layers[*]}: every include points down"
