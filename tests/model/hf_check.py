#!/usr/bin/env python3
"""The model against Hugging Face transformers' own classes (not our code): DeepseekV3ForCausalLM
for MLA models, Glm4MoeForCausalLM for GQA ones.

Usage: deps/hf-venv/bin/python tests/model/hf_check.py DIR [--tol 1e-4]

DIR is what dump_reference writes (manifest.json + tensors.bin: weights under Hugging Face
names, tokens, targets, our loss and every gradient, and hf_config: the config.json moe
export writes for the model). The script builds the model transformers makes of that
config.json (AutoConfig, so the file itself is under test: a default it leaves to the class,
such as Glm4Moe's partial_rotary_factor of 0.5, would compute something else), loads our
weights into it by name (strict: every tensor
of the HF model must come from ours and the other way round), runs it in float64 on our
tokens, takes the mean cross-entropy against our targets (ignore index -1), backpropagates
and compares the loss and every gradient. HF computes RMSNorm, the router's logits and the
softmax in float32 inside a float64 model, so agreement is to ~1e-6, not to float64. Its
MoE adds the experts' outputs into a tensor of the router weights' dtype (float32), which
fails in a float64 model: the one change made to it here hands the router's weights on in
the model's dtype (their values are HF's, computed in float32).
"""
import argparse
import json
import re
import pathlib
import sys

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.deepseek_v2 import modeling_deepseek_v2 as hf_v2
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf_v3
from transformers.models.glm4_moe import modeling_glm4_moe as hf_glm

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference import Tally, load  # noqa: E402  (the manifest reader and the report, shared)


def _in_model_dtype(route):
    def forward(self, hidden_states):
        indices, weights = route(self, hidden_states)
        return indices, weights.to(hidden_states.dtype)
    return forward


for _router in (hf_v3.DeepseekV3TopkRouter, hf_glm.Glm4MoeTopkRouter, hf_v2.DeepseekV2MoEGate):
    _router.forward = _in_model_dtype(_router.forward)


def class_name(ours, model_type):
    """Our tensor name as model_type's class has it: Mixtral's router is block_sparse_moe.gate,
    its experts' gate / up / down projections w1 / w3 / w2."""
    if model_type != "mixtral":
        return ours
    m = re.fullmatch(r"(model\.layers\.\d+\.)mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight", ours)
    if m:
        return f"{m[1]}block_sparse_moe.experts.{m[2]}.{ {'gate': 'w1', 'up': 'w3', 'down': 'w2'}[m[3]] }.weight"
    return re.sub(r"\.mlp\.gate\.(weight|e_score_correction_bias)$", r".block_sparse_moe.gate.\1", ours)


def hf_model(hf_config):
    """transformers' model of moe export's config.json, in float64, eager attention."""
    j = dict(hf_config)
    config = AutoConfig.for_model(j.pop("model_type"), **j)
    config._attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(config).double().eval()  # eval: no dropout (there is none)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--expect", type=pathlib.Path, help="expected.npz (make_hf.py): the weights must equal it")
    ap.add_argument("--hf-config", type=pathlib.Path,
                    help="build transformers' model from this config.json (an imported one moe does not export)")
    args = ap.parse_args()
    man, A = load(args.dir)
    m = man["model"]
    assert m["aux_loss_coef"] == 0 and m["capacity_factor"] == 0, "transformers' classes: no balance loss, no capacity"
    torch.manual_seed(0)
    hf_config = json.load(open(args.hf_config)) if args.hf_config else man["hf_config"]
    model = hf_model(hf_config)
    # our tensors and gradients under the class's names
    named = lambda n: class_name(n, hf_config["model_type"])  # noqa: E731
    A = {("grad/" + named(n[5:]) if n.startswith("grad/") else named(n)): a for n, a in A.items()}
    ours = {n: a for n, a in A.items() if n not in ("tokens", "targets") and not n.startswith("grad/")}
    state = {n: torch.tensor(a, dtype=torch.float64) for n, a in ours.items()}
    if not any(n.endswith("e_score_correction_bias") for n in model.state_dict()):  # DeepseekV2, Mixtral: none
        assert all(not a.any() for n, a in ours.items() if n.endswith("e_score_correction_bias")), "nonzero biases"
        state = {n: t for n, t in state.items() if not n.endswith("e_score_correction_bias")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        print(f"hf_check: names differ: HF has but we lack {sorted(missing)[:8]}; "
              f"we have but HF lacks {sorted(unexpected)[:8]}")
        return 1
    tokens = torch.from_numpy(A["tokens"].astype(np.int64))
    targets = torch.from_numpy(A["targets"].astype(np.int64))
    logits = model(input_ids=tokens).logits
    B, T = tokens.shape
    ce = torch.nn.functional.cross_entropy(logits.view(B * T, -1), targets.view(-1), ignore_index=-1,
                                           reduction="sum")
    loss = ce / max(int((targets >= 0).sum()), 1)
    loss.backward()

    t = Tally(args.tol)
    if args.expect:  # the imported weights, bit for bit what the HF files hold
        expected = np.load(args.expect)
        differ = [n for n in expected.files if n not in ours or not np.array_equal(ours[n], expected[n])]
        print(f"imported weights: {len(expected.files) - len(differ)} of {len(expected.files)} equal the HF files'")
        t.fails += differ
    t.report("loss", abs(loss.item() - man["loss"]) / abs(loss.item()))
    for name, p in model.named_parameters():
        g = p.grad.numpy() if p.grad is not None else np.zeros(p.shape)
        mine = A.get("grad/" + name)
        if mine is None:
            t.fails.append(name)
            print(f"grad/{name}: MISSING from our dump")
            continue
        t.report("grad/" + name, Tally.rel(mine.astype(np.float64), g))
    print(f"hf_check: {t.passes} passed, {len(t.fails)} failed against transformers' {type(model).__name__}")
    return 0 if not t.fails else 1


if __name__ == "__main__":
    sys.exit(main())
