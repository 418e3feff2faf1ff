#!/usr/bin/python3
"""PyTorch peer of bench_train_step: the same model (read from the JSON bench_train_step
writes), written the way a PyTorch user would (nn.Modules, vectorised routing, a loop over
experts with index_add_, torch.optim.AdamW), timed over the same number of training steps on
random tokens, on the device moe ran on. On a GPU the peer gets its best eager setup: BF16
autocast (moe's bf16 and fp8 runs are both compared with it), fused AdamW and
scaled_dot_product_attention (flash attention). Prints tokens/s, MFU on the same FLOP count
and peak, the peak memory, and the ratio moe / PyTorch.

Usage: python3 bench/train_step.py RESULT_JSON [--threads N]
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, c, eps):
        super().__init__()
        self.w, self.eps = nn.Parameter(torch.ones(c)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class SwiGLU(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(c, h, bias=False), nn.Linear(c, h, bias=False), nn.Linear(h, c, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Attention(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, self.H, self.Hkv = m["d_model"], m["n_heads"], m["n_kv_heads"]
        self.D = C // self.H
        self.q = nn.Linear(C, self.H * self.D, bias=False)
        self.k = nn.Linear(C, self.Hkv * self.D, bias=False)
        self.v = nn.Linear(C, self.Hkv * self.D, bias=False)
        self.o = nn.Linear(self.H * self.D, C, bias=False)
        T, half = m["seq_len"], self.D // 2
        ang = torch.arange(T)[:, None] * m["rope_theta"] ** (-torch.arange(half) * 2.0 / self.D)
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1)[None, :, None, :].float())
        self.register_buffer("sin", torch.cat([ang.sin(), ang.sin()], -1)[None, :, None, :].float())
        self.register_buffer("mask", torch.triu(torch.full((T, T), float("-inf")), 1))

    def rope(self, x):
        x1, x2 = x.chunk(2, -1)
        return x * self.cos + torch.cat([-x2, x1], -1) * self.sin

    def forward(self, x):
        B, T, _ = x.shape
        q = self.rope(self.q(x).view(B, T, self.H, self.D)).transpose(1, 2)
        k = self.rope(self.k(x).view(B, T, self.Hkv, self.D)).transpose(1, 2)
        v = self.v(x).view(B, T, self.Hkv, self.D).transpose(1, 2)
        rep = self.H // self.Hkv
        if x.is_cuda:  # the fused kernel a GPU user would call
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            return self.o(a.transpose(1, 2).reshape(B, T, -1))
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / self.D ** 0.5 + self.mask[:T, :T], -1)
        return self.o((att @ v).transpose(1, 2).reshape(B, T, -1))


class MoE(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, self.E, self.K = m["d_model"], m["routed_experts"], m["top_k"]
        self.G, self.TG, self.scale = m["n_groups"], m["topk_groups"], m["routed_scaling_factor"]
        self.sigmoid, self.normalize = m["router"] == "sigmoid", m["router_normalize"]
        self.router = nn.Linear(C, self.E, bias=False)
        self.register_buffer("bias", torch.zeros(self.E))
        self.experts = nn.ModuleList(SwiGLU(C, m["expert_hidden"]) for _ in range(self.E))
        self.shared = SwiGLU(C, m["shared_experts"] * m["expert_hidden"]) if m["shared_experts"] else None

    def forward(self, x):
        shape, x = x.shape, x.reshape(-1, x.shape[-1])
        logits = self.router(x)
        s = torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, -1)
        with torch.no_grad():
            c = s + self.bias
            if self.G > 1:
                grp = c.view(len(x), self.G, -1).topk(min(2, self.E // self.G), -1).values.sum(-1)
                keep = torch.zeros_like(grp, dtype=torch.bool).scatter_(1, grp.topk(self.TG, -1).indices, True)
                c = c.masked_fill(~keep.repeat_interleave(self.E // self.G, 1), float("-inf"))
            idx = c.topk(self.K, -1).indices
        g = s.gather(1, idx)
        if self.normalize:
            g = g / g.sum(-1, keepdim=True)
        g = g * self.scale
        out = self.shared(x) if self.shared is not None else torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if len(rows):
                out = out.index_add(0, rows, expert(x[rows]) * g[rows, slot, None])
        return out.view(shape)


class Model(nn.Module):
    def __init__(self, m):
        super().__init__()
        C, eps = m["d_model"], m["norm_eps"]
        self.embed = nn.Embedding(m["vocab_size"], C)
        self.blocks = nn.ModuleList()
        for i in range(m["n_layers"]):
            moe = i >= m["dense_layers"] and m["routed_experts"] > 0
            self.blocks.append(nn.ModuleList([RMSNorm(C, eps), Attention(m), RMSNorm(C, eps),
                                              MoE(m) if moe else SwiGLU(C, m["ffn_hidden"])]))
        self.norm, self.head = RMSNorm(C, eps), nn.Linear(C, m["vocab_size"], bias=False)

    def forward(self, tokens, targets):
        x = self.embed(tokens)
        for n1, attn, n2, ffn in self.blocks:
            x = x + attn(n1(x))
            x = x + ffn(n2(x))
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    r = json.load(open(a.result))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m, B, steps, warmup = r["model"], r["batch"], r["steps"], 3
    dev = torch.device(r.get("device", "cpu"))
    gpu = dev.type == "cuda"
    model = Model(m).to(dev)
    fused = {"fused": True} if gpu else {}  # (Debian's CPU torch predates the argument)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, **fused)
    V, T = m["vocab_size"], m["seq_len"]
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    rounds, best = r["rounds"], float("inf")  # best of the same rounds as bench_train_step
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for s in range(warmup + rounds * steps):
        if s >= warmup and (s - warmup) % steps == 0:
            sync()
            if s > warmup:
                best = min(best, time.perf_counter() - t0)
            t0 = time.perf_counter()
        tok, tgt = torch.randint(0, V, (B, T), device=dev), torch.randint(0, V, (B, T), device=dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=gpu):
            loss = model(tok, tgt)
        loss.backward()
        opt.step()
    sync()
    tps = steps * B * T / min(best, time.perf_counter() - t0)
    setup = (f"bf16 autocast on {torch.cuda.get_device_name()}" if gpu else f"{torch.get_num_threads()} threads")
    line = f"pytorch: {tps:.0f} tokens/s"
    if r.get("peak_flops", 0) > 0:
        line += f", MFU {100 * tps * r['flops_per_token'] / r['peak_flops']:.1f}%"
    if gpu:
        line += f", peak memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB"
    print(f"{line} (best of {rounds} rounds of {steps} steps of {B} x {T} tokens, torch {torch.__version__}, {setup})")
    print(f"ratio moe ({r.get('precision', 'fp32')}) / pytorch: {r['moe_tokens_per_s'] / tps:.2f}x")


if __name__ == "__main__":
    main()
