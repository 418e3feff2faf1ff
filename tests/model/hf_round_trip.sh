#!/usr/bin/env bash
# A config trained for 2 steps, then:
#   moe export        -> transformers loads it as it is (the class config.json names; MTP left
#                        out), with the run's weights (hf_export_check.py)
#   dump_reference    -> our loss and gradients on the run's weights against transformers' (hf_check.py)
#   moe export (--mtp where the config has multi-token prediction: DeepSeek's release layout)
#     -> moe import of it equals the run bit for bit (hf_round_trip.py)
# Usage: hf_round_trip.sh MOE DUMP_REFERENCE DATA_DIR WORKDIR CONFIG; skips (77) without deps/hf-venv.
set -euo pipefail
source "$(dirname "$0")/hf_venv.sh"
moe=$1 dump=$2 data=$3 work=$4 config=$5
rm -rf "$work" && mkdir -p "$work"
"$moe" train "$config" --set data.dir="$data" --set model.vocab_size=400 --set train.steps=2 \
  --set train.eval_batches=1 --set checkpoint.dir="$work/run" > "$work/train.log"
ckpt="$work/run/step_00000002.h5"
"$moe" export "$ckpt" "$work/hf"
mtp=$("$moe" config show "$config" | sed -n 's/^  mtp_depth: //p')
if [ "$mtp" -gt 0 ]; then "$moe" export "$ckpt" "$work/hf_full" --mtp; else cp -r "$work/hf" "$work/hf_full"; fi
"$moe" import "$work/hf_full" "$work/back"
/usr/bin/python3 "$root/tests/model/hf_round_trip.py" "$ckpt" "$work/hf_full" "$work/back/step_00000000.h5" \
  "$work/expected.npz"
"$py" "$root/tests/model/hf_export_check.py" "$work/hf" "$work/expected.npz"
# (transformers has no sequence-wise balance loss: off for the comparison)
"$dump" "$work/dump" --init "$ckpt" model.mtp_depth=0 model.aux_loss_coef=0 model.seq_len=12
"$py" "$root/tests/model/hf_check.py" "$work/dump"
