#!/usr/bin/env python3
"""Hugging Face transformers' DeepseekV3ForCausalLM as the peer of bench_train_step: the same
model (the JSON's model section, mapped to DeepseekV3Config as moe export maps it), one
training step = forward with labels, backward, torch.optim.AdamW, on random tokens, timed
over the same rounds and steps at the same thread count. The peer's best CPU setup: eager
(torch.compile is tried with --compile), SDPA attention, foreach AdamW. transformers has no
multi-token prediction: compare with moe's model.mtp_depth=0 (bench/hf_train_step.sh runs
both and says which is which).

Usage: deps/hf-venv/bin/python bench/hf_train_step.py RESULT_JSON [--threads N] [--compile]
"""
import argparse
import json
import time

import torch
import transformers
from transformers import DeepseekV3Config, DeepseekV3ForCausalLM


def hf_config(m):
    assert m["attention"] == "mla", "transformers' DeepseekV3 computes MLA only"
    return DeepseekV3Config(
        vocab_size=m["vocab_size"], hidden_size=m["d_model"], intermediate_size=m["ffn_hidden"],
        moe_intermediate_size=m["expert_hidden"], num_hidden_layers=m["n_layers"],
        num_attention_heads=m["n_heads"], num_key_value_heads=m["n_heads"],
        n_shared_experts=m["shared_experts"], n_routed_experts=m["routed_experts"],
        num_experts_per_tok=m["top_k"], first_k_dense_replace=m["dense_layers"], n_group=m["n_groups"],
        topk_group=m["topk_groups"], routed_scaling_factor=m["routed_scaling_factor"],
        norm_topk_prob=m["router_normalize"], q_lora_rank=m["q_lora_rank"] or None,
        kv_lora_rank=m["kv_lora_rank"], qk_nope_head_dim=m["qk_nope_head_dim"],
        qk_rope_head_dim=m["qk_rope_head_dim"], v_head_dim=m["v_head_dim"], rms_norm_eps=m["norm_eps"],
        rope_theta=m["rope_theta"], max_position_embeddings=m["seq_len"], rope_interleave=True,
        tie_word_embeddings=False, attn_implementation="sdpa")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    r = json.load(open(a.result))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m, B, steps, warmup = r["model"], r["batch"], r["steps"], 3
    model = DeepseekV3ForCausalLM(hf_config(m)).train()
    step_model = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, foreach=True)
    V, T = m["vocab_size"], m["seq_len"]
    rounds, best = r["rounds"], float("inf")
    t0 = time.perf_counter()
    for s in range(warmup + rounds * steps):
        if s >= warmup and (s - warmup) % steps == 0:
            if s > warmup:
                best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
        tok = torch.randint(0, V, (B, T))
        opt.zero_grad(set_to_none=True)
        loss = step_model(input_ids=tok, labels=tok).loss
        loss.backward()
        opt.step()
    tps = steps * B * T / min(best, time.perf_counter() - t0)
    setup = f"{torch.get_num_threads()} threads, {'torch.compile' if a.compile else 'eager'}, sdpa"
    print(f"transformers: {tps:.0f} tokens/s (best of {rounds} rounds of {steps} steps of {B} x {T} tokens, "
          f"DeepseekV3ForCausalLM, transformers {transformers.__version__}, torch {torch.__version__}, {setup})")
    print(f"ratio moe / transformers: {r['moe_tokens_per_s'] / tps:.2f}x")


if __name__ == "__main__":
    main()
