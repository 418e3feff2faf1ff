#!/usr/bin/env bash
# moe import refuses a broken Hugging Face directory in one line and writes nothing. The
# directories are made from a real export (configs/deepseek-v3-tiny.yaml trained one step):
#   missing_shard   model.safetensors.index.json names a shard that is not there
#   wrong_shape     config.json's moe_intermediate_size no longer matches the experts' tensors
#   extra_tensor    a tensor the model does not have (a second copy under another name)
#   bad_activation  hidden_act gelu (moe's FFNs are SwiGLU)
# and moe export of a Mixtral-shaped run whose router biases are not zero.
# Usage: hf_bad_dirs.sh MOE DATA_DIR WORKDIR
set -euo pipefail
moe=$1 data=$2 work=$3
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work" && mkdir -p "$work"
"$moe" train "$here/../../configs/deepseek-v3-tiny.yaml" --set data.dir="$data" --set model.vocab_size=400 \
  --set model.mtp_depth=0 --set train.steps=1 --set train.eval_batches=1 --set checkpoint.dir="$work/run" > /dev/null
"$moe" export "$work/run/step_00000001.h5" "$work/good" > /dev/null
"$moe" import "$work/good" "$work/good_out" > /dev/null  # the good one imports
make() { rm -rf "$work/$1" && cp -r "$work/good" "$work/$1"; }
edit_json() {  # FILE PYTHON-EXPR-ON-j
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); $2; json.dump(j, open(sys.argv[1],'w'))" "$1"
}
names() { /usr/bin/python3 -c "
import json,struct,sys; raw=open(sys.argv[1],'rb').read(); n=struct.unpack('<Q',raw[:8])[0]
print('\n'.join(k for k in json.loads(raw[8:8+n]) if k!='__metadata__'))" "$1"; }

make missing_shard
mv "$work/missing_shard/model.safetensors" "$work/missing_shard/model-00001-of-00002.safetensors"
{ echo '{"weight_map": {'; names "$work/missing_shard/model-00001-of-00002.safetensors" |
  sed 's/.*/"&": "model-00001-of-00002.safetensors",/'; echo '"lm_head.weight": "model-00002-of-00002.safetensors"}}'; } \
  > "$work/missing_shard/model.safetensors.index.json"
make wrong_shape
edit_json "$work/wrong_shape/config.json" 'j["moe_intermediate_size"] += 8'
make extra_tensor
/usr/bin/python3 - "$work/extra_tensor/model.safetensors" <<'PY'
import json, struct, sys
raw = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
h["model.layers.0.self_attn.extra.weight"] = {"dtype": "F32", "shape": [2], "data_offsets": [end, end + 8]}
text = json.dumps(h).encode()
text += b" " * ((8 - len(text) % 8) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:] + b"\0" * 8)
PY
make bad_activation
edit_json "$work/bad_activation/config.json" 'j["hidden_act"] = "gelu"'

fails=0
check() {  # NAME REGEX
  if ! "$here/../cli/expect_failure.sh" "^moe: error: .*$2" "$moe" import "$work/$1" "$work/$1_out" > "$work/$1.log"; then
    echo "FAIL $1:"; cat "$work/$1.log"; fails=$((fails + 1))
  elif [ -e "$work/$1_out/step_00000000.h5" ] || ls "$work/$1_out"/*.tmp > /dev/null 2>&1; then
    echo "FAIL $1: wrote into $work/$1_out"; fails=$((fails + 1))
  else
    echo "ok $1: $(grep -o 'moe: error: .*' "$work/$1.log" | head -1)"
  fi
}
check missing_shard "model.safetensors.index.json: shard model-00002-of-00002.safetensors \(of lm_head.weight\) is missing"
check wrong_shape "mlp.experts.0.gate_proj.weight is \[32,64\] there, \[40,64\] in the model config.json gives"
check extra_tensor "tensor model.layers.0.self_attn.extra.weight is not part of the model"
check bad_activation "config.json: hidden_act: moe's FFNs are SwiGLU"
# And export: a Mixtral-shaped run whose router biases balancing moved has no Mixtral form.
"$moe" train "$here/../../configs/tiny.yaml" --set data.dir="$data" --set model.vocab_size=400 --set model.router=softmax \
  --set model.shared_experts=0 --set model.dense_layers=0 --set model.n_groups=1 --set model.topk_groups=1 \
  --set train.steps=1 --set train.eval_batches=1 --set checkpoint.dir="$work/mixtral_run" > /dev/null
if ! "$here/../cli/expect_failure.sh" "^moe: error: .*mlp.gate.e_score_correction_bias is not zero, and mixtral has no router bias" \
  "$moe" export "$work/mixtral_run/step_00000001.h5" "$work/mixtral_out" > "$work/mixtral.log" || [ -e "$work/mixtral_out/model.safetensors" ]; then
  echo "FAIL mixtral_biases:"; cat "$work/mixtral.log"; fails=$((fails + 1))
else
  echo "ok mixtral_biases: $(grep -o 'moe: error: .*' "$work/mixtral.log" | head -1)"
fi
[ "$fails" -eq 0 ]
