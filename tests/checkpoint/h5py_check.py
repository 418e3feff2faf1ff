#!/usr/bin/env python3
"""A moe checkpoint read by h5py alone (no project code): names, shapes and dtypes against
the config stored in the file, and the Fletcher32 checksum of every chunk of a few tensors
recomputed here from the raw chunk bytes and compared with the trailer HDF5 stored.

Usage: h5py_check.py CHECKPOINT.h5
"""
import re
import sys

import h5py
import numpy as np


def fletcher32(data: bytes) -> int:
    """HDF5's H5_checksum_fletcher32: 16-bit big-endian words, sums folded every 360 words."""
    words = np.frombuffer(data[: len(data) // 2 * 2], dtype=">u2").astype(np.uint64)
    sum1 = sum2 = 0
    for start in range(0, len(words), 360):
        block = words[start:start + 360]
        # sum2 accumulates the running sum1 after each word of the block.
        prefix = np.cumsum(block)
        sum2 += int(len(block)) * sum1 + int(prefix.sum())
        sum1 += int(block.sum())
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    if len(data) % 2:
        sum1 += data[-1] << 8
        sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


def config_int(config: str, key: str) -> int:
    m = re.search(rf"^\s+{key}: (\d+)$", config, re.M)
    assert m, f"config has no {key}"
    return int(m.group(1))


def main(path: str) -> None:
    f = h5py.File(path, "r")
    assert f.attrs["format_version"] == 1, f.attrs["format_version"]
    config = f.attrs["config"].decode() if isinstance(f.attrs["config"], bytes) else f.attrs["config"]
    V, C = config_int(config, "vocab_size"), config_int(config, "d_model")
    E, L, dense = config_int(config, "routed_experts"), config_int(config, "n_layers"), config_int(config, "dense_layers")
    H = config_int(config, "expert_hidden")

    names = {}
    f.visititems(lambda n, o: names.__setitem__(n, o) if isinstance(o, h5py.Dataset) else None)
    weights = {n[len("weights/"):] for n in names if n.startswith("weights/")}
    for group in ("optimizer/exp_avg/", "optimizer/exp_avg_sq/"):
        assert {n[len(group):] for n in names if n.startswith(group)} == weights, f"{group} names differ from weights/"
    for n, d in names.items():
        assert d.dtype == np.float32 and d.fletcher32, f"{n}: {d.dtype}, fletcher32 {d.fletcher32}"
    assert names["weights/model.embed_tokens.weight"].shape == (V, C)
    assert names["weights/lm_head.weight"].shape == (V, C)
    for layer in range(dense, L):
        for e in range(E):
            n = f"weights/model.layers.{layer}.mlp.experts.{e}.gate_proj.weight"
            assert names[n].shape == (H, C), (n, names[n].shape)
        assert names[f"buffers/model.layers.{layer}.mlp.gate.e_score_correction_bias"].shape == (E,)
    assert not any(".experts.gate_proj" in n for n in names), "expert tensors must be stored per expert"

    checked = 0
    for n in ("weights/lm_head.weight", f"weights/model.layers.{L - 1}.mlp.experts.{E - 1}.down_proj.weight",
              "optimizer/exp_avg_sq/model.embed_tokens.weight"):
        d = names[n]
        for i in range(d.id.get_num_chunks()):
            info = d.id.get_chunk_info(i)
            _, raw = d.id.read_direct_chunk(info.chunk_offset)
            payload, stored = raw[:-4], int.from_bytes(raw[-4:], "little")
            assert fletcher32(payload) == stored, f"{n} chunk {i}: {fletcher32(payload):08x} != {stored:08x}"
            # The payload is the tensor's bytes (no compression): it decodes to what h5py reads.
            rows = info.chunk_offset[0]
            decoded = np.frombuffer(payload, dtype="<f4").reshape(-1, *d.shape[1:])
            assert np.array_equal(decoded, d[rows:rows + decoded.shape[0]]), f"{n} chunk {i} decodes differently"
            checked += 1
    print(f"{path}: {len(names)} datasets, step {f.attrs['step']}, {checked} chunk checksums recomputed: ok")


if __name__ == "__main__":
    main(sys.argv[1])
