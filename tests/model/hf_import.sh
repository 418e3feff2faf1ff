#!/usr/bin/env bash
# A Hugging Face DeepseekV3 model through `moe import` and back against transformers:
#   make_hf.py (random model, save_pretrained; --fp8: DeepSeek-V3's FP8 weight layout)
#   -> moe import (and again streamed over two ranks: the same file's tensors) -> dump_reference --init (our forward/backward on the imported weights)
#   -> hf_check.py --expect (weights equal the files', loss and gradients equal HF's).
# --gqa: a Glm4Moe model instead; --mixtral: a Mixtral one (renamed tensors, no router biases);
# --v2: a DeepseekV2 one (DeepSeek-V2-Lite's softmax routing),
# checked against its own config.json, whose export moe refuses (no class exports it back).
# Usage: hf_import.sh MOE DUMP_REFERENCE WORKDIR [--fp8|--gqa|--mixtral|--v2]; skips (77) without deps/hf-venv.
set -euo pipefail
source "$(dirname "$0")/hf_venv.sh"
moe=$1 dump=$2 work=$3
shift 3
rm -rf "$work" && mkdir -p "$work"
"$py" "$root/tests/model/make_hf.py" "$work/hf" "$@"
"$moe" import "$work/hf" "$work/ckpt"
# Streamed over two ranks, one tensor per rank at a time: the same checkpoint.
if [ -n "${MPIEXEC:-}" ]; then
  "$MPIEXEC" -np 2 "$moe" import "$work/hf" "$work/ckpt_np2" --memory-mb 0 > /dev/null
  /usr/bin/python3 "$root/tests/checkpoint/same_weights.py" "$work/ckpt/step_00000000.h5" "$work/ckpt_np2/step_00000000.h5"
fi
"$dump" "$work/dump" --init "$work/ckpt/step_00000000.h5" model.seq_len=12
if [ "${1:-}" = --v2 ]; then
  "$py" "$root/tests/model/hf_check.py" "$work/dump" --expect "$work/hf/expected.npz" --hf-config "$work/hf/config.json"
  "$root/tests/cli/expect_failure.sh" "^moe: error: model.router: softmax: no Hugging Face class" \
    "$moe" export "$work/ckpt/step_00000000.h5" "$work/export"
  exit
fi
"$py" "$root/tests/model/hf_check.py" "$work/dump" --expect "$work/hf/expected.npz"
# And back: the imported checkpoint exported loads in transformers with the same weights.
"$moe" export "$work/ckpt/step_00000000.h5" "$work/export"
"$py" "$root/tests/model/hf_export_check.py" "$work/export" "$work/hf/expected.npz"
