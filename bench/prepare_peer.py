#!/usr/bin/env python3
"""The peer bench/prepare.sh measures moe data prepare against: what a user would write to
tokenize a JSONL corpus in Python. Reads CORPUS_DIR's .jsonl files line by line (json), encodes each
record's text with the sentencepiece package, appends end-of-document (id 1), and writes
uint16 shards of 4 Mi tokens with numpy. Prints the token count.
Usage: prepare_peer.py CORPUS_DIR TOKENIZER.model OUT_DIR"""
import json
import os
import sys

import numpy as np
import sentencepiece as spm

records, model, out = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
sp = spm.SentencePieceProcessor(model_file=model)
buf, shard, total = [], 0, 0


def flush():
    global buf, shard
    np.asarray(buf, dtype=np.uint16).tofile(f"{out}/train_{shard:05d}.bin")
    buf, shard = [], shard + 1


for name in sorted(os.listdir(records)):  # the corpus directory's .jsonl files, in name order
    with open(os.path.join(records, name), encoding="utf-8") as f:
        for line in f:
            ids = sp.encode(json.loads(line)["text"])
            buf.extend(ids)
            buf.append(1)
            total += len(ids) + 1
            if len(buf) >= 1 << 22:
                flush()
flush()
print(total)
