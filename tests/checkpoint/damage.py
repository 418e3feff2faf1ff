#!/usr/bin/env python3
"""Damages a copy of a checkpoint for the bad-input tests.

  damage.py flip FILE DATASET   flip one byte inside DATASET's first chunk (its data, not metadata)
"""
import sys

import h5py


def main(mode: str, path: str, dataset: str) -> None:
    assert mode == "flip", mode
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(0)
    with open(path, "r+b") as out:
        out.seek(info.byte_offset + info.size // 2)
        b = out.read(1)
        out.seek(info.byte_offset + info.size // 2)
        out.write(bytes([b[0] ^ 0x5A]))


if __name__ == "__main__":
    main(*sys.argv[1:])
