#!/usr/bin/env python3
"""A small random DeepseekV3ForCausalLM (or, with --gqa, Glm4MoeForCausalLM: GQA with the same
MoE, whole-head RoPE) saved as transformers saves it, for `moe import`.

Usage: deps/hf-venv/bin/python tests/model/make_hf.py DIR [--fp8] [--gqa]

DIR gets config.json and model.safetensors from save_pretrained (bfloat16, as published models
come), with random router biases; --fp8 then rewrites every projection weight of the layers
as DeepSeek-V3's FP8 release stores them (E4M3 codes and a weight_scale_inv per 128x128
block). DIR/expected.npz holds every tensor's f32 value as it should be imported.
"""
import argparse
import pathlib

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM,
                          Glm4MoeConfig, Glm4MoeForCausalLM, MixtralConfig, MixtralForCausalLM)


def config():
    return DeepseekV3Config(
        vocab_size=50, hidden_size=32, intermediate_size=300, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=8,
        routed_scaling_factor=2.5, kv_lora_rank=20, q_lora_rank=24, qk_rope_head_dim=6, v_head_dim=10,
        qk_nope_head_dim=8, n_group=2, topk_group=1, num_experts_per_tok=2, first_k_dense_replace=1,
        norm_topk_prob=True, max_position_embeddings=64, rope_scaling=None, rope_interleave=True,
        tie_word_embeddings=False, initializer_range=0.1)


def gqa_config():
    # partial_rotary_factor, rms_norm_eps and n_shared_experts set, not left to Glm4Moe's defaults
    return Glm4MoeConfig(
        vocab_size=50, hidden_size=32, intermediate_size=300, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=1.0, n_shared_experts=1,
        n_routed_experts=8, routed_scaling_factor=2.5, n_group=2, topk_group=1, num_experts_per_tok=2,
        first_k_dense_replace=1, norm_topk_prob=True, max_position_embeddings=64, rms_norm_eps=1e-6,
        attention_bias=False, use_qk_norm=False, tie_word_embeddings=False, initializer_range=0.1)


def v2_config():
    # DeepSeek-V2-Lite's routing: softmax, greedy top-k, no groups, unnormalised gates
    return DeepseekV2Config(
        vocab_size=50, hidden_size=32, intermediate_size=300, moe_intermediate_size=16, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2, n_routed_experts=8,
        routed_scaling_factor=1.5, kv_lora_rank=20, q_lora_rank=None, qk_rope_head_dim=6, v_head_dim=10,
        qk_nope_head_dim=8, topk_method="greedy", num_experts_per_tok=2, first_k_dense_replace=1,
        norm_topk_prob=False, max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
        initializer_range=0.1)


def mixtral_config():
    return MixtralConfig(
        vocab_size=50, hidden_size=32, intermediate_size=16, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=1e4, sliding_window=None, tie_word_embeddings=False, initializer_range=0.1)


def to_fp8(w):
    """E4M3 codes and one scale per 128x128 block: w ~= codes * scale (DeepSeek-V3's layout)."""
    R, C = w.shape
    s = torch.ones((R + 127) // 128, (C + 127) // 128)
    q = torch.empty(R, C, dtype=torch.float8_e4m3fn)
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            block = w[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128].float()
            s[i, j] = max(block.abs().max().item(), 1e-12) / 448.0
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = (block / s[i, j]).to(torch.float8_e4m3fn)
    return q, s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--fp8", action="store_true")
    ap.add_argument("--gqa", action="store_true")
    ap.add_argument("--v2", action="store_true")
    ap.add_argument("--mixtral", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(3)
    model = (Glm4MoeForCausalLM(gqa_config()) if args.gqa else DeepseekV2ForCausalLM(v2_config()) if args.v2
             else MixtralForCausalLM(mixtral_config()) if args.mixtral else DeepseekV3ForCausalLM(config()))
    with torch.no_grad():
        for layer in model.model.layers:
            if hasattr(getattr(layer, "mlp", None), "gate") and hasattr(layer.mlp.gate, "e_score_correction_bias"):
                layer.mlp.gate.e_score_correction_bias.uniform_(-0.05, 0.05)
    model.to(torch.bfloat16).save_pretrained(args.dir, safe_serialization=True)
    path = args.dir / "model.safetensors"
    tensors = load_file(path)
    expected = {}
    if args.fp8:
        out = {}
        for name, t in tensors.items():
            if name.startswith("model.layers.") and name.endswith("proj.weight"):
                q, s = to_fp8(t)
                out[name], out[name + "_scale_inv"] = q, s
                expected[name] = (q.float() * s.repeat_interleave(128, 0)[:t.shape[0]]
                                  .repeat_interleave(128, 1)[:, :t.shape[1]]).numpy()
            else:
                out[name] = t
        save_file(out, path, metadata={"format": "pt"})
        tensors = out
    for name, t in tensors.items():
        if not name.endswith("_scale_inv") and name not in expected:
            expected[name] = t.float().numpy()
    if args.v2:  # moe's router biases start at zero where the class has none (Mixtral's export leaves them out)
        for name in list(expected):
            if name.endswith("mlp.gate.weight"):
                expected[name.replace("gate.weight", "gate.e_score_correction_bias")] = np.zeros(8, np.float32)
    np.savez(args.dir / "expected.npz", **expected)
    print(f"make_hf: {len(tensors)} tensors -> {path}{' (FP8 projections)' if args.fp8 else ''}")


if __name__ == "__main__":
    main()
