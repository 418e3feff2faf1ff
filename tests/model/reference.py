#!/usr/bin/python3
"""Independent float64 PyTorch oracle for the DeepSeek-V3-style MoE transformer.

Usage: /usr/bin/python3 tests/model/reference.py DIR [--tol 1e-4]

DIR holds manifest.json + tensors.bin (tokens, targets, weights under Hugging Face names and
the C++ gradients as grad/NAME). Recomputes the loss and gradients from the weights and
compares them with the C++ values. Math follows DESIGN.md, section "The model".
"""
import argparse
import json
import math
import pathlib
import sys

import numpy as np
import torch

F64 = torch.float64


def load(d):
    """Read manifest.json and every tensor of tensors.bin (little-endian, row-major)."""
    man = json.loads((d / "manifest.json").read_text())
    raw = (d / "tensors.bin").read_bytes()
    arrays = {}
    for name, t in man["tensors"].items():
        dt = {"f32": "<f4", "i32": "<i4"}[t["dtype"]]
        n = int(np.prod(t["shape"], dtype=np.int64))
        a = np.frombuffer(raw, dtype=dt, count=n, offset=t["offset"])
        arrays[name] = a.reshape(t["shape"])
    return man, arrays


class Tally:
    """Checks of relative errors against a tolerance, printed one per line, counted."""

    def __init__(self, tol):
        self.tol, self.passes, self.fails = tol, 0, []

    def report(self, name, err):
        ok = err < self.tol
        self.passes += ok
        if not ok:
            self.fails.append(name)
        print(f"{name}: max rel err {err:.3e} {'ok' if ok else 'FAIL'}")

    @staticmethod
    def rel(ours, ref):
        """max |ours - ref| / max |ref|."""
        return np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12)


def expected_names(m):
    """Trainable weights and non-trained buffers the config implies: two dicts name -> shape."""
    V, C, H, Hkv = m["vocab_size"], m["d_model"], m["n_heads"], m["n_kv_heads"]
    D, E = C // H, m["routed_experts"]

    def swiglu_shapes(prefix, width):
        return {prefix + "gate_proj.weight": [width, C], prefix + "up_proj.weight": [width, C],
                prefix + "down_proj.weight": [C, width]}

    train = {"model.embed_tokens.weight": [V, C], "lm_head.weight": [V, C], "model.norm.weight": [C]}
    buffers = {}
    L = m["n_layers"]
    for i in range(L, L + m["mtp_depth"]):  # an MTP depth: its norms, projection and a block
        p = f"model.layers.{i}."
        for leaf in ("enorm.weight", "hnorm.weight", "shared_head.norm.weight"):
            train[p + leaf] = [C]
        train[p + "eh_proj.weight"] = [C, 2 * C]
    for i in range(L + m["mtp_depth"]):
        p = f"model.layers.{i}."
        train[p + "input_layernorm.weight"] = [C]
        train[p + "post_attention_layernorm.weight"] = [C]
        train[p + "self_attn.q_proj.weight"] = [H * D, C]
        train[p + "self_attn.k_proj.weight"] = [Hkv * D, C]
        train[p + "self_attn.v_proj.weight"] = [Hkv * D, C]
        train[p + "self_attn.o_proj.weight"] = [C, H * D]
        if is_moe(m, i):
            train[p + "mlp.gate.weight"] = [E, C]
            buffers[p + "mlp.gate.e_score_correction_bias"] = [E]
            for j in range(E):
                train.update(swiglu_shapes(p + f"mlp.experts.{j}.", m["expert_hidden"]))
            if m["shared_experts"] > 0:
                train.update(swiglu_shapes(p + "mlp.shared_experts.",
                                           m["shared_experts"] * m["expert_hidden"]))
        else:
            train.update(swiglu_shapes(p + "mlp.", m["ffn_hidden"]))
    return train, buffers


def is_moe(m, i):
    return m["routed_experts"] > 0 and i >= m["dense_layers"]


def rmsnorm(x, w, eps):
    # y = x / sqrt(mean(x^2) + eps) * w
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):
    # x: (B, heads, T, D). Rotate half: dim i pairs with i + D/2, angle = pos * theta^(-2i/D).
    T, D = x.shape[-2], x.shape[-1]
    inv = theta ** (-torch.arange(0, D // 2, dtype=F64) * 2.0 / D)
    ang = torch.arange(T, dtype=F64)[:, None] * inv[None, :]  # (T, D/2)
    cos, sin = torch.cos(ang), torch.sin(ang)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attention(h, W, p, m):
    B, T, C = h.shape
    H, Hkv = m["n_heads"], m["n_kv_heads"]
    D = C // H
    q = (h @ W[p + "q_proj.weight"].T).view(B, T, H, D).transpose(1, 2)    # (B,H,T,D)
    k = (h @ W[p + "k_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
    v = (h @ W[p + "v_proj.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
    q, k = rope(q, m["rope_theta"]), rope(k, m["rope_theta"])
    # GQA: query head h reads kv head h // (H / Hkv)
    rep = H // Hkv
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    att = torch.softmax(scores.masked_fill(causal, float("-inf")), dim=-1)
    out = (att @ v).transpose(1, 2).reshape(B, T, H * D)
    return out @ W[p + "o_proj.weight"].T


def swiglu(x, W, p):
    # down(silu(gate(x)) * up(x))
    g = x @ W[p + "gate_proj.weight"].T
    u = x @ W[p + "up_proj.weight"].T
    return (torch.nn.functional.silu(g) * u) @ W[p + "down_proj.weight"].T


def route(c, m):
    """Expert choice per token from c = s + bias (N, E) numpy. Returns (N, top_k) indices
    ordered by c descending; every ranking breaks ties toward the lower index (stable sort)."""
    N, E = c.shape
    G, k = m["n_groups"], m["top_k"]
    if G > 1:
        # group score = sum of the top-2 c in the group (top-1 for one-expert groups)
        grp = -np.sort(-c.reshape(N, G, E // G), axis=-1)
        gscore = grp[:, :, : min(2, E // G)].sum(-1)
        kept = np.argsort(-gscore, axis=-1, kind="stable")[:, : m["topk_groups"]]
        allowed = np.zeros((N, G), dtype=bool)
        np.put_along_axis(allowed, kept, True, axis=-1)
        c = np.where(np.repeat(allowed, E // G, axis=-1), c, -np.inf)
    return np.argsort(-c, axis=-1, kind="stable")[:, :k]


def moe(h, W, A, p, m):
    """Returns (output, sum over sequences b of aux_b) for one MoE layer."""
    B, T, C = h.shape
    E, k = m["routed_experts"], m["top_k"]
    x = h.reshape(B * T, C)
    N = B * T
    logits = x @ W[p + "gate.weight"].T
    s = torch.sigmoid(logits) if m["router"] == "sigmoid" else torch.softmax(logits, dim=-1)
    bias = torch.from_numpy(A[p + "gate.e_score_correction_bias"].astype(np.float64))
    idx = route((s + bias).detach().numpy(), m)  # selection carries no gradient
    idx_t = torch.from_numpy(idx)
    g = s.gather(1, idx_t)  # gates from the unbiased scores
    if m["router_normalize"]:
        g = g / g.sum(-1, keepdim=True)
    g = g * m["routed_scaling_factor"]
    # capacity: walk tokens n ascending, then each token's chosen experts in order
    keep = np.ones((N, k), dtype=bool)
    if m["capacity_factor"] > 0:
        cap = math.ceil(m["capacity_factor"] * N * k / E)
        load = np.zeros(E, dtype=np.int64)
        for n in range(N):
            for i in range(k):
                e = idx[n, i]
                if load[e] >= cap:
                    keep[n, i] = False
                else:
                    load[e] += 1
    out = swiglu(x, W, p + "shared_experts.") if m["shared_experts"] > 0 else torch.zeros_like(x)
    for e in range(E):
        rows, slots = np.nonzero((idx == e) & keep)
        if len(rows) == 0:
            continue
        r, sl = torch.from_numpy(rows), torch.from_numpy(slots)
        y = swiglu(x[r], W, p + f"experts.{e}.") * g[r, sl][:, None]
        out = out.index_add(0, r, y)
    aux = torch.zeros((), dtype=F64)
    if m["aux_loss_coef"] > 0:
        # f_e = E/(k T) * #tokens of sequence choosing e (before drops); P_e = mean_t s'_{t,e}
        chosen = np.zeros((N, E))
        np.put_along_axis(chosen, idx, 1.0, axis=-1)
        f = torch.from_numpy(chosen.reshape(B, T, E).sum(1)) * (E / (k * T))
        sn = (s / s.sum(-1, keepdim=True)).view(B, T, E)
        P = sn.mean(1)
        aux = m["aux_loss_coef"] * (f * P).sum()
    if m["router_z_loss_coef"] > 0:
        # ST-MoE: the mean over each sequence's tokens of logsumexp(router logits)^2, summed
        # over sequences (the caller divides by B: the mean over all tokens)
        aux = aux + m["router_z_loss_coef"] * (torch.logsumexp(logits, dim=-1) ** 2).sum() / T
    return out.view(B, T, C), aux


def block(x, W, A, m, i):
    """Transformer block i on x (B,T,C): (output, its balance loss)."""
    eps = m["norm_eps"]
    p = f"model.layers.{i}."
    x = x + attention(rmsnorm(x, W[p + "input_layernorm.weight"], eps), W, p + "self_attn.", m)
    h = rmsnorm(x, W[p + "post_attention_layernorm.weight"], eps)
    if is_moe(m, i):
        y, a = moe(h, W, A, p + "mlp.", m)
        return x + y, a
    return x + swiglu(h, W, p + "mlp."), torch.zeros((), dtype=F64)


def ce_sum(x, W, targets):
    logits = x @ W["lm_head.weight"].T
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-1, reduction="sum")


def mtp(h, W, A, m, tokens, targets):
    """Multi-token prediction (DeepSeek-V3 report, eq. 21-25), depth k = 1..D: h'_i =
    eh_proj [enorm(Emb(t_{i+k})); hnorm(h^{k-1}_i)] (the released weights' order), h^k =
    shared_head.norm(TRM_k(h')), predicting the target k places further; h^0 the main model's
    normed output. Positions i + k >= T have no token there: a zero embedding, no target.
    Returns (sum over depths of the CE sums, the depths' balance losses)."""
    B, T = tokens.shape
    eps, L = m["norm_eps"], m["n_layers"]
    total, aux = torch.zeros((), dtype=F64), torch.zeros((), dtype=F64)
    for k in range(1, m["mtp_depth"] + 1):
        p = f"model.layers.{L + k - 1}."
        emb = torch.zeros(B, T, h.shape[-1], dtype=F64)
        emb[:, : T - k] = W["model.embed_tokens.weight"][tokens[:, k:]]
        tgt = torch.full((B, T), -1, dtype=torch.int64)
        tgt[:, : T - k] = targets[:, k:]
        x = torch.cat([rmsnorm(emb, W[p + "enorm.weight"], eps), rmsnorm(h, W[p + "hnorm.weight"], eps)], dim=-1)
        y, a = block(x @ W[p + "eh_proj.weight"].T, W, A, m, L + k - 1)
        h = rmsnorm(y, W[p + "shared_head.norm.weight"], eps)
        total, aux = total + ce_sum(h, W, tgt), aux + a
    return total, aux


def forward(W, A, m, tokens, targets, mtp_weight):
    """Loss = mean CE over targets >= 0 + (1/B) * sum_{b, MoE layers} aux_b
    + mtp_weight / D * sum_k (CE sum of depth k) / (the main loss's target count)."""
    B, T = tokens.shape
    x = W["model.embed_tokens.weight"][tokens]
    aux = torch.zeros((), dtype=F64)
    for i in range(m["n_layers"]):
        x, a = block(x, W, A, m, i)
        aux = aux + a
    x = rmsnorm(x, W["model.norm.weight"], m["norm_eps"])
    n_valid = max(int((targets >= 0).sum()), 1)
    loss = ce_sum(x, W, targets) / n_valid
    if m["mtp_depth"] > 0:
        ce_mtp, a = mtp(x, W, A, m, tokens, targets)
        loss, aux = loss + mtp_weight / m["mtp_depth"] * ce_mtp / n_valid, aux + a
    return loss + aux / B


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", type=pathlib.Path)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    man, A = load(args.dir)
    m = man["model"]
    train, buffers = expected_names(m)
    fails, passes = [], 0

    # every tensor the config implies must be present, with its shape and dtype
    B, T = man["batch"], man["seq"]
    needed = {"tokens": ([B, T], np.int32), "targets": ([B, T], np.int32)}
    needed.update({n: (sh, np.float32) for n, sh in {**train, **buffers}.items()})
    needed.update({"grad/" + n: (sh, np.float32) for n, sh in train.items()})
    for n, (shape, dtype) in needed.items():
        if n not in A:
            fails.append(n)
            print(f"{n}: MISSING from manifest")
        elif list(A[n].shape) != shape or A[n].dtype != dtype:
            fails.append(n)
            print(f"{n}: shape {list(A[n].shape)} {A[n].dtype}, expected {shape} {np.dtype(dtype)}")
    for n in sorted(set(A) - set(needed)):
        fails.append(n)
        print(f"{n}: present in manifest but not used by the model")
    if fails:
        print(f"reference: {passes} passed, {len(fails)} failed")
        return 1

    W = {n: torch.tensor(A[n], dtype=F64, requires_grad=True) for n in train}
    tokens = torch.from_numpy(A["tokens"].astype(np.int64))
    targets = torch.from_numpy(A["targets"].astype(np.int64))
    loss = forward(W, A, m, tokens, targets, man.get("mtp_loss_weight", 0.0))
    loss.backward()

    t = Tally(args.tol)
    ref = loss.item()
    t.report("loss", abs(ref - man["loss"]) / max(abs(ref), 1e-12))
    for n in train:
        g = W[n].grad  # None when the weight got no gradient (e.g. an expert never chosen)
        r = g.numpy() if g is not None else np.zeros(W[n].shape)
        t.report("grad/" + n, Tally.rel(A["grad/" + n].astype(np.float64), r))
    print(f"reference: {t.passes} passed, {len(t.fails)} failed")
    return 0 if not t.fails else 1


if __name__ == "__main__":
    sys.exit(main())
