"""same_state.py A B: two checkpoints hold bitwise the same training state: every dataset
(weights, AdamW moments, router biases) equal bit for bit, and the same step and token count."""
import sys

import h5py
import numpy as np

a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
names = []
a.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
other = []
b.visititems(lambda n, o: other.append(n) if isinstance(o, h5py.Dataset) else None)
assert sorted(names) == sorted(other), sorted(set(names) ^ set(other))[:5]
for n in names:
    x, y = a[n][()], b[n][()]
    assert x.shape == y.shape and np.array_equal(x.view(np.uint32), y.view(np.uint32)), n
for attr in ("step", "tokens"):
    assert a.attrs[attr] == b.attrs[attr], (attr, a.attrs[attr], b.attrs[attr])
print(f"ok: {len(names)} datasets bitwise equal at step {a.attrs['step']}")
