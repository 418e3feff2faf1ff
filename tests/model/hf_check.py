#!/usr/bin/env python3
"""The model against Hugging Face transformers' own DeepseekV3ForCausalLM (not our code).

Usage: deps/hf-venv/bin/python tests/model/hf_check.py DIR [--tol 1e-4]

DIR is what dump_reference writes (manifest.json + tensors.bin: weights under Hugging Face
names, tokens, targets, our loss and every gradient). The script builds DeepseekV3ForCausalLM
from the manifest's model config, loads our weights into it by name (strict: every tensor
of the HF model must come from ours and the other way round), runs it in float64 on our
tokens, takes the mean cross-entropy against our targets (ignore index -1), backpropagates
and compares the loss and every gradient. HF computes RMSNorm, the router's logits and the
softmax in float32 inside a float64 model, so agreement is to ~1e-6, not to float64. Its
MoE adds the experts' outputs into a tensor of the router weights' dtype (float32), which
fails in a float64 model: the one change made to it here hands the router's weights on in
the model's dtype (their values are HF's, computed in float32).
"""
import argparse
import pathlib
import sys

import numpy as np
import torch
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM
from transformers.models.deepseek_v3 import modeling_deepseek_v3 as hf

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from reference import Tally, load  # noqa: E402  (the manifest reader and the report, shared)


_route = hf.DeepseekV3TopkRouter.forward


def _route_in_model_dtype(self, hidden_states):
    indices, weights = _route(self, hidden_states)
    return indices, weights.to(hidden_states.dtype)


hf.DeepseekV3TopkRouter.forward = _route_in_model_dtype


def rope_scaling(m):
    """Our YaRN keys as transformers' rope_scaling (None without scaling)."""
    if m["rope_factor"] <= 1:
        return None
    r = {"type": "yarn", "rope_type": "yarn", "factor": m["rope_factor"],
         "original_max_position_embeddings": m["rope_original_positions"],
         "beta_fast": m["rope_beta_fast"], "beta_slow": m["rope_beta_slow"]}
    for ours, theirs in (("rope_mscale", "mscale"), ("rope_mscale_all_dim", "mscale_all_dim"),
                         ("rope_attention_factor", "attention_factor")):
        if m[ours] > 0:
            r[theirs] = m[ours]
    return r


def hf_config(m):
    """Our model section as DeepseekV3Config (configuration_deepseek_v3.py's names)."""
    assert m["attention"] == "mla", "DeepseekV3 has multi-head latent attention only"
    return DeepseekV3Config(
        vocab_size=m["vocab_size"], hidden_size=m["d_model"], intermediate_size=m["ffn_hidden"],
        moe_intermediate_size=m["expert_hidden"], num_hidden_layers=m["n_layers"],
        num_attention_heads=m["n_heads"], num_key_value_heads=m["n_heads"],
        n_shared_experts=m["shared_experts"], n_routed_experts=m["routed_experts"],
        routed_scaling_factor=m["routed_scaling_factor"], kv_lora_rank=m["kv_lora_rank"],
        q_lora_rank=m["q_lora_rank"] or None, qk_rope_head_dim=m["qk_rope_head_dim"],
        v_head_dim=m["v_head_dim"], qk_nope_head_dim=m["qk_nope_head_dim"], n_group=m["n_groups"],
        topk_group=m["topk_groups"], num_experts_per_tok=m["top_k"],
        first_k_dense_replace=m["dense_layers"], norm_topk_prob=m["router_normalize"],
        rms_norm_eps=m["norm_eps"], rope_theta=m["rope_theta"], max_position_embeddings=m["seq_len"],
        rope_scaling=rope_scaling(m), rope_interleave=True, attention_bias=False, tie_word_embeddings=False,
        hidden_act="silu", attn_implementation="eager")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--expect", type=pathlib.Path, help="expected.npz (make_hf.py): the weights must equal it")
    args = ap.parse_args()
    man, A = load(args.dir)
    m = man["model"]
    assert m["router"] == "sigmoid" and m["aux_loss_coef"] == 0 and m["capacity_factor"] == 0, \
        "DeepseekV3: sigmoid router, no balance loss, no capacity"
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(hf_config(m)).double().eval()  # eval: no dropout (there is none)
    ours = {n: a for n, a in A.items() if n not in ("tokens", "targets") and not n.startswith("grad/")}
    state = {n: torch.tensor(a, dtype=torch.float64) for n, a in ours.items()}
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
    print(f"hf_check: {t.passes} passed, {len(t.fails)} failed against transformers' DeepseekV3ForCausalLM")
    return 0 if not t.fails else 1


if __name__ == "__main__":
    sys.exit(main())
