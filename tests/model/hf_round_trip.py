#!/usr/bin/python3
"""A checkpoint through `moe export` (`--mtp` where it has multi-token prediction) and `moe
import`: read by h5py and the safetensors header alone (no project code).

Usage: /usr/bin/python3 hf_round_trip.py CKPT.h5 EXPORT_DIR IMPORTED.h5 EXPECTED_NPZ

- With MTP, EXPORT_DIR holds DeepSeek's release layout: config.json's
  num_nextn_predict_layers is the run's model.mtp_depth, and each depth k has
  model.layers.{L+k-1}.{enorm, hnorm, eh_proj, shared_head.norm} and copies of the embedding
  and head (embed_tokens, shared_head.head) equal to the model's.
- IMPORTED.h5 (moe import of EXPORT_DIR) holds every weight and router bias of CKPT.h5, bit
  for bit, and nothing else; its config keeps the depth.
- EXPECTED_NPZ is written: the tensors without MTP, for hf_export_check.py on the plain export.
"""
import json
import re
import struct
import sys

import h5py
import numpy as np


def tensors(path):
    f = h5py.File(path, "r")
    out = {}
    f.visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) and
                 n.startswith(("weights/", "buffers/")) else None)
    config = f.attrs["config"]
    return out, config.decode() if isinstance(config, bytes) else config


def config_int(config, key):
    return int(re.search(rf"^\s+{key}: (\d+)$", config, re.M).group(1))


def safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], "<f4").reshape(v["shape"])
            for k, v in header.items()}


def main(ckpt, export_mtp, imported, npz):
    fails = []
    ours, config = tensors(ckpt)
    L, D = config_int(config, "n_layers"), config_int(config, "mtp_depth")
    hf_config = json.load(open(f"{export_mtp}/config.json"))
    if hf_config.get("num_nextn_predict_layers", 0) != D:
        fails.append(f"config.json: num_nextn_predict_layers {hf_config.get('num_nextn_predict_layers')}, not {D}")
    st = safetensors(f"{export_mtp}/model.safetensors")
    for k in range(1, D + 1):
        p = f"model.layers.{L + k - 1}."
        for leaf in ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                     "self_attn.o_proj.weight"):
            if p + leaf not in st:
                fails.append(f"export --mtp: no {p + leaf}")
        for copy, of in (("embed_tokens.weight", "model.embed_tokens.weight"),
                         ("shared_head.head.weight", "lm_head.weight")):
            if p + copy not in st or not np.array_equal(st[p + copy], st[of]):
                fails.append(f"export --mtp: {p + copy} is not a copy of {of}")
    back, back_config = tensors(imported)
    if config_int(back_config, "mtp_depth") != D:
        fails.append(f"{imported}: model.mtp_depth {config_int(back_config, 'mtp_depth')}, not {D}")
    if set(back) != set(ours):
        fails.append(f"imported names differ: missing {sorted(set(ours) - set(back))[:5]}, "
                     f"extra {sorted(set(back) - set(ours))[:5]}")
    differ = [n for n in ours if n in back and not np.array_equal(ours[n], back[n])]
    fails += [f"{n}: differs after export --mtp and import" for n in differ]
    mtp = tuple(f"model.layers.{i}." for i in range(L, L + D))
    plain = {n.split("/", 1)[1]: v for n, v in ours.items() if not n.split("/", 1)[1].startswith(mtp)}
    np.savez(npz, **plain)
    for f in fails:
        print(f)
    print(f"hf_round_trip: {len(ours)} tensors, {len(ours) - len(differ)} bitwise equal after the round trip; "
          f"{len(fails)} problems")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
