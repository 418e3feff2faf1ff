#!/usr/bin/python3
"""Two moe checkpoints hold the same weights and buffers, bit for bit, under the same names
(h5py alone). Usage: same_weights.py A.h5 B.h5"""
import sys

import h5py
import numpy as np


def tensors(path):
    out = {}
    h5py.File(path, "r").visititems(lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) and
                                    n.startswith(("weights/", "buffers/")) else None)
    return out


a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
problems = [f"only in {sys.argv[1]}: {n}" for n in sorted(set(a) - set(b))]
problems += [f"only in {sys.argv[2]}: {n}" for n in sorted(set(b) - set(a))]
problems += [f"{n} differs" for n in sorted(set(a) & set(b)) if not np.array_equal(a[n], b[n])]
for p in problems[:20]:
    print(p)
print(f"same_weights: {len(a)} and {len(b)} tensors, {len(problems)} problems")
sys.exit(1 if problems else 0)
