#!/usr/bin/env bash
# LoRA against full fine-tuning of the same model, one run, same data, same steps, on the CPU:
# tokens/s, the peak of tensor memory (the trainer's own count), the process's peak RSS, and
# the optimizer state. The model: configs/tiny.yaml widened to ~14M parameters (d_model 256,
# 4 blocks, 16 routed experts of 256) so that weights and optimizer state dominate memory; the
# base is 1 step of training, checkpointed, and both runs fine-tune from it for STEPS steps.
# Usage: bench/lora.sh [threads] [steps] [rank]  (after scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-1} steps=${2:-20} rank=${3:-8}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
moe=build/trainer/moe work=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
echo "bench lora: rank $rank vs full fine-tuning, $steps steps, $threads thread(s), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')"
[ -f runs/data/fortunes/meta.json ] || "$moe" data prepare configs/tiny.yaml > /dev/null
model=(--set data.dir=runs/data/fortunes --set model.d_model=256 --set model.n_layers=4 --set model.n_heads=8
  --set model.n_kv_heads=4 --set model.ffn_hidden=1024 --set model.routed_experts=16 --set model.expert_hidden=256
  --set model.n_groups=4 --set model.seq_len=128 --set train.micro_batch=4 --set train.eval_batches=1
  --set train.log_every=1000)
"$moe" train configs/tiny.yaml "${model[@]}" --set train.steps=1 --set checkpoint.dir="$work/base" > /dev/null
run() {  # $1: label, then extra --set flags
  local label=$1; shift
  /usr/bin/time -f "%M" -o "$work/$label.rss" "$moe" train configs/tiny.yaml "${model[@]}" --set train.steps="$steps" \
    --set train.warmup_steps=1 --set checkpoint.init_from="$work/base/step_00000001.h5" \
    --set checkpoint.dir="$work/$label" "$@" > "$work/$label.log" 2>&1
  local tps peak opt rss
  tps=$(sed -n 's/^tokens .*ranks, \([0-9.]*\) tokens\/s.*/\1/p' "$work/$label.log")
  peak=$(sed -n 's/.*memory .* planned, \([0-9.]* [KMG]B\) measured.*/\1/p' "$work/$label.log")
  opt=$(sed -n 's/.*optimizer state \([0-9.]* [KMG]*B\) on this rank.*/\1/p' "$work/$label.log")
  rss=$(cat "$work/$label.rss")
  printf '%-12s %9s tokens/s | peak tensors %9s | peak RSS %7.1f MB | optimizer state %s\n' "$label" "$tps" "$peak" \
    "$(python3 -c "print($rss / 1024)")" "$opt"
  echo "$tps $rss" > "$work/$label.num"
}
run full
run lora --set lora.rank="$rank"
read -r full_tps full_rss < "$work/full.num"
read -r lora_tps lora_rss < "$work/lora.num"
python3 -c "print(f'lora / full: {$lora_tps / $full_tps:.2f}x tokens/s, {$lora_rss / $full_rss:.2f}x peak RSS')"
