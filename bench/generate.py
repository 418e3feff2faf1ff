"""transformers' greedy generate() on the exported model, 256 new tokens after the prompt (its
default dynamic KV cache, min_new_tokens so that it never stops early); prints its tokens/s
and moe's ratio to it. Usage: generate.py HF_DIR PROMPT --threads N --moe MOE_RESULTS"""
import argparse
import re
import time

import sentencepiece as spm
import torch
from transformers import AutoModelForCausalLM

ap = argparse.ArgumentParser()
ap.add_argument("hf_dir")
ap.add_argument("prompt")
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--moe", required=True)
a = ap.parse_args()
torch.set_num_threads(a.threads)
model = AutoModelForCausalLM.from_pretrained(a.hf_dir, torch_dtype=torch.float32).eval()
ids = torch.tensor([spm.SentencePieceProcessor(model_file=f"{a.hf_dir}/tokenizer.model").encode(a.prompt)])


def run(n):
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=1, pad_token_id=1)
    return time.perf_counter() - t0


run(8)  # warm-up
best = min(run(257) - run(1) for _ in range(3))
hf = 256 / best
print(f"transformers generate  {hf:8.1f} tokens/s (its KV cache, best of 3)")
for line in open(a.moe):
    m = re.match(r"moe generate \((\S+)\)\s+([\d.]+)", line)
    if m:
        print(f"ratio moe ({m.group(1)}) / transformers: {float(m.group(2)) / hf:.2f}x")
