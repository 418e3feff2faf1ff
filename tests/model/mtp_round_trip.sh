#!/usr/bin/env bash
# configs/deepseek-v3-tiny.yaml (MLA and multi-token prediction) trained for 2 steps, then:
#   moe export        -> transformers loads it as it is (MTP left out), with the run's weights
#   dump_reference    -> our loss and gradients on the run's weights against transformers' (hf_check.py)
#   moe export --mtp  -> DeepSeek's release layout; moe import of it equals the run bit for bit
# Usage: mtp_round_trip.sh MOE DUMP_REFERENCE DATA_DIR WORKDIR; skips (77) without deps/hf-venv.
set -euo pipefail
source "$(dirname "$0")/hf_venv.sh"
moe=$1 dump=$2 data=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
"$moe" train "$root/configs/deepseek-v3-tiny.yaml" --set data.dir="$data" --set model.vocab_size=400 \
  --set train.steps=2 --set train.eval_batches=1 --set checkpoint.dir="$work/run" > "$work/train.log"
ckpt="$work/run/step_00000002.h5"
"$moe" export "$ckpt" "$work/hf"
"$moe" export "$ckpt" "$work/hf_mtp" --mtp
"$moe" import "$work/hf_mtp" "$work/back"
/usr/bin/python3 "$root/tests/model/mtp_round_trip.py" "$ckpt" "$work/hf_mtp" "$work/back/step_00000000.h5" \
  "$work/expected.npz"
"$py" "$root/tests/model/hf_export_check.py" "$work/hf" "$work/expected.npz"
# (transformers has no sequence-wise balance loss: off for the comparison)
"$dump" "$work/dump" --init "$ckpt" model.mtp_depth=0 model.aux_loss_coef=0 model.seq_len=12
"$py" "$root/tests/model/hf_check.py" "$work/dump"
