"""safetensors_check.py CKPT OUT: `moe export CKPT --format safetensors OUT` wrote tensors
that the `safetensors` package reads back equal, bit for bit, to the checkpoint's datasets
read by h5py (weights/ and buffers/, no project code), under the same names, and a
config.json whose shape keys match what the tensors say."""
import json
import re
import sys

import h5py
import numpy as np
from safetensors import safe_open

ckpt, out = sys.argv[1], sys.argv[2]
with h5py.File(ckpt, "r") as f:
    want = {}
    for group in ("weights", "buffers"):
        f[group].visititems(lambda name, obj, g=group: want.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
with safe_open(f"{out}/model.safetensors", framework="numpy") as st:
    got = {k: st.get_tensor(k) for k in st.keys()}
    meta = st.metadata()
assert set(got) == set(want), (sorted(set(got) ^ set(want)))[:10]
for name, x in want.items():
    assert got[name].dtype == np.float32 and got[name].shape == x.shape, (name, got[name].shape, x.shape)
    assert np.array_equal(got[name], x), name
cfg = json.load(open(f"{out}/config.json"))
layers = {int(m.group(1)) for k in got if (m := re.match(r"model\.layers\.(\d+)\.", k))}
experts = {int(m.group(1)) for k in got if (m := re.match(r"model\.layers\.\d+\.mlp\.experts\.(\d+)\.", k))}
assert cfg["num_hidden_layers"] == len(layers), (cfg["num_hidden_layers"], len(layers))
assert cfg["n_routed_experts"] == len(experts), (cfg["n_routed_experts"], len(experts))
assert (cfg["vocab_size"], cfg["hidden_size"]) == got["model.embed_tokens.weight"].shape
assert meta["step"] == str(cfg["moe_export"]["step"])
print(f"ok: {len(got)} tensors equal, {len(layers)} layers, {len(experts)} experts, step {meta['step']}")
