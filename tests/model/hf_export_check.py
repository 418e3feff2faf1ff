#!/usr/bin/env python3
"""`moe export`'s directory loads in transformers as it is, with the weights it came from.

Usage: deps/hf-venv/bin/python tests/model/hf_export_check.py EXPORT_DIR EXPECTED_NPZ

AutoModelForCausalLM.from_pretrained(EXPORT_DIR) must build the class config.json names
(DeepseekV3ForCausalLM, Glm4MoeForCausalLM) with no
missing, unexpected or mismatched tensor, every tensor equal to EXPECTED_NPZ (make_hf.py's
values, through moe import and moe export), and run a forward pass.
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM


def main():
    export, expected = sys.argv[1], np.load(sys.argv[2])
    wanted = json.load(open(f"{export}/config.json"))["architectures"][0]
    model, info = AutoModelForCausalLM.from_pretrained(export, output_loading_info=True, torch_dtype=torch.float32)
    problems = {k: v for k, v in info.items() if v}
    if type(model).__name__ != wanted or problems:
        print(f"hf_export_check: built {type(model).__name__}; loading reported {problems}")
        return 1
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    differ = [n for n in expected.files if n not in state or not np.array_equal(state[n], expected[n])]
    logits = model(input_ids=torch.arange(12).view(1, 12) % model.config.vocab_size).logits
    ok = not differ and bool(torch.isfinite(logits).all())
    print(f"hf_export_check: {type(model).__name__} from {export}: {len(expected.files) - len(differ)} of "
          f"{len(expected.files)} tensors equal, logits {tuple(logits.shape)} {'finite' if ok else 'WRONG'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
