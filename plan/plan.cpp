#include "plan/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "comm/pipeline.h"
#include "model/lora.h"
#include "plan/counts.h"
#include "plan/stages.h"

namespace moe {
namespace {

// Bytes per saved element: GEMM inputs (what a weight gradient reads; FP8 keeps them as E4M3
// plus one FP32 scale per 128) and everything else.
struct ElementBytes {
  double gemm = 4, other = 4;
};
ElementBytes element_bytes(Precision p) {
  switch (p) {
    case Precision::fp32: return {4, 4};
    case Precision::bf16: return {2, 2};
    case Precision::fp8: return {1 + 4.0 / 128, 2};
  }
  return {};
}

// Expected distinct bins hit by k uniform draws.
double distinct(double bins, double k) { return bins <= 1 ? 1 : bins * (1 - std::pow(1 - 1 / bins, k)); }

// Elements per token, split as ElementBytes is.
struct Elems {
  double gemm = 0, other = 0;
  Elems& operator+=(const Elems& o) { return gemm += o.gemm, other += o.other, *this; }
  double bytes(const ElementBytes& b) const { return gemm * b.gemm + other * b.other; }
};

// The model seen from one device: a stage's layers with tp and ep applied.
struct Shard {
  const ModelConfig& m;
  double tp, ep, r;            // r: expected distinct ep ranks per token
  double load;                 // the expert rows this rank receives over the balanced load (PlanOptions)
  bool fused;                  // fused attention (CUDA): the softmax is recomputed, not saved
  bool recompute;              // train.recompute
  std::vector<LoraSite> lora;  // the adapters (lora.rank > 0: the base frozen)

  // LoRA adapters' parameters of one block on this device: routed experts' or the rest. They
  // follow their projection under tp (model/lora.h).
  double lora_weights(std::int64_t layer, bool experts) const {
    double w = 0;
    const double r = double(m.lora.rank);
    for (const LoraSite& s : lora) {
      if (s.layer != layer || (s.experts > 0) != experts) continue;
      const double a = r * double(s.K), b = r * double(s.N);
      w += experts                               ? double(s.experts) / ep * (a + b)
           : s.split == LoraSite::Split::columns ? a + b / tp
           : s.split == LoraSite::Split::rows    ? a / tp + b
                                                 : a + b;
    }
    return w;
  }
  // Their training FLOPs per token on this device (counts.h's 8 r K + 6 r N, and the forward
  // again under recomputation): a factor kept whole runs on every tp rank; routed experts see
  // 1/tp of the tokens.
  double lora_flops(std::int64_t layer) const {
    double f = 0;
    for (const LoraSite& s : lora)
      if (s.layer == layer) {
        const auto [a, b] = lora_site_flops(s);
        f += a + b;
      }
    return f;
  }
  // One site's (A, B) FLOPs per token on this device.
  std::pair<double, double> lora_site_flops(const LoraSite& s) const {
    const double again = recompute && s.in_block ? 2 : 0, r = double(m.lora.rank);
    double a = (8 + again) * r * double(s.K), b = (6 + again) * r * double(s.N);
    if (s.experts > 0) return {a * double(m.top_k) / tp, b * double(m.top_k) / tp};
    if (s.split == LoraSite::Split::columns) b /= tp;
    if (s.split == LoraSite::Split::rows) a /= tp;
    return {a, b};
  }

  // Saved for backward by one block, per token (what model/ keeps between forward and backward).
  Elems saved(std::int64_t layer) const {
    const double C = double(m.d_model), T = double(m.seq_len), H = double(m.n_heads) / tp;
    Elems a{.gemm = 2 * C, .other = 2 * C + 2};  // norm outputs (h1, h2) / residuals (out, xm) and rstd
    const double scores = fused ? H : H * T;
    if (m.attention == AttentionType::gqa) {
      const double D = double(m.d_model / m.n_heads), Hkv = double(m.n_kv_heads) / tp;
      a += {.gemm = H * D, .other = (H + 2 * Hkv) * D + scores};  // att | q, k, v, softmax
    } else {
      // As model/mla.cpp keeps them: the normed latents and att | the latents before their
      // norms and the norms' rstd, q, k, v at the core's width D = max(qk, v) head dims.
      const double D = double(std::max(qk_head_dim(m), m.v_head_dim)), dv = double(m.v_head_dim);
      const double latents = double(m.q_lora_rank + m.kv_lora_rank);
      a += {.gemm = latents + H * dv, .other = latents + 2 + 3 * H * D + scores};
    }
    if (!is_moe_layer(m, layer)) {
      const double F = double(m.ffn_hidden) / tp;
      a += {.gemm = F, .other = 2 * F};  // h | gate, up
    } else {
      const double K = double(m.top_k), E = double(m.routed_experts), He = double(m.expert_hidden);
      const double S = double(m.shared_experts * m.expert_hidden) / tp;
      // Routed, for the 1/tp of the tokens this rank dispatches: xe, he | scores, index,
      // gates | per-row gates, expert gate/up, expert outputs; the rows received scale with
      // the load.
      a += {.gemm = load * (K * C + K * He) / tp, .other = (E + 2 * K + load * (r * K + 2 * K * He + K * C)) / tp};
      a += {.gemm = S, .other = 2 * S};  // shared experts
    }
    return a;
  }
  // The output gradients (dy) of one block's GEMMs per token: what a backward whose weight
  // gradients are split off (model/linear.h WeightGrads) keeps with their inputs until they
  // run. LoRA's frozen projections have none (the adapters' are a rank's width: left out).
  double grad_outputs(std::int64_t layer) const {
    if (!lora.empty()) return 0;
    const double C = double(m.d_model), H = double(m.n_heads) / tp;
    double a = C;  // o_proj
    if (m.attention == AttentionType::gqa) {
      const double D = double(m.d_model / m.n_heads), Hkv = double(m.n_kv_heads) / tp;
      a += (H + 2 * Hkv) * D;  // q, k, v
    } else {                   // q_a (or q), q_b, kv_a with the rope key, kv_b
      a += double(m.q_lora_rank) + H * double(qk_head_dim(m)) + double(m.kv_lora_rank + m.qk_rope_head_dim) +
           H * double(m.qk_nope_head_dim + m.v_head_dim);
    }
    if (!is_moe_layer(m, layer)) return a + 2 * double(m.ffn_hidden) / tp + C;  // gate, up, down
    const double K = double(m.top_k), He = double(m.expert_hidden);
    const double S = double(m.shared_experts * m.expert_hidden) / tp;
    return a + load * K * (2 * He + C) / tp + (S > 0 ? 2 * S + C : 0);  // routed rows, shared experts
  }
  // The largest set of temporaries one block's backward holds at once, per token.
  double workspace(std::int64_t layer) const {
    const double C = double(m.d_model), H = double(m.n_heads) / tp;
    double attn;
    if (m.attention == AttentionType::gqa) {
      const double D = double(m.d_model / m.n_heads), Hkv = double(m.n_kv_heads) / tp;
      attn = 2 * H * D + 2 * Hkv * D + C;  // datt, dq, dk, dv, tmp
    } else {
      // model/mla.cpp's backward: datt, the core's da, dq, dk, dv (width D), dkv, dq_full and
      // the rotary parts per head; the shared key part, the latents' and the input's.
      const double dqk = double(qk_head_dim(m)), dv = double(m.v_head_dim), R = double(m.qk_rope_head_dim);
      const double D = double(std::max(qk_head_dim(m), m.v_head_dim));
      attn = H * (2 * dv + 4 * D + double(m.qk_nope_head_dim) + dqk + 3 * R) + 3 * R + 3 * double(m.kv_lora_rank) +
             2 * double(m.q_lora_rank) + C;
    }
    double ffn;
    if (!is_moe_layer(m, layer)) {
      ffn = 3 * double(m.ffn_hidden) / tp + C;  // dh, dg, du, tmp
    } else {
      const double K = double(m.top_k), E = double(m.routed_experts), He = double(m.expert_hidden);
      // dye, dgr, dhe, dge, due, dxe, tmp | dgates, dscores, dlogits, dxr
      ffn = load * (3 * K * C + r * K + 3 * K * He) / tp + K + 2 * E + C;
    }
    return 2 * C + std::max(attn, ffn);  // dh, dxm around either
  }
  // Expert-parallel send/receive rows of one MoE block's backward (ds, dr, dx_rows, dxs).
  // Without ep the exchange hands the rows over in place: two of them.
  // Imbalance grows the received two (dr, dx_rows), not what this rank's tokens send.
  double dispatch_buffers() const { return (ep > 1 ? 2 + 2 * load : 2) * r * double(m.d_model) / tp; }
  // Weights of one block on this device: tp-sharded, replicated, routed experts.
  double block_weights(std::int64_t layer) const {
    const double latent = double(mla_latent_parameters(m));  // whole on every tp rank
    double w = (double(attention_matrix_parameters(m)) - latent) / tp + latent + double(block_norm_parameters(m));
    w += lora_weights(layer, false);
    if (!is_moe_layer(m, layer)) return w + double(dense_ffn_parameters(m)) / tp;
    return w + double(shared_expert_parameters(m)) / tp + double(router_parameters(m));
  }
  double block_experts(std::int64_t layer) const {
    const double base =
        is_moe_layer(m, layer) ? double(m.routed_experts) / ep * double(routed_expert_parameters(m)) : 0;
    return base + lora_weights(layer, true);
  }
  // Of them, the trained (with gradients and moments): the adapters under LoRA, else all.
  double block_trained(std::int64_t layer, bool experts) const {
    if (m.lora.rank > 0) return lora_weights(layer, experts);
    return experts ? block_experts(layer) : block_weights(layer);
  }
  // Training FLOPs per token of one block on this device.
  double block_flops(std::int64_t layer) const {
    const double ffn =
        is_moe_layer(m, layer)
            ? double(router_parameters(m) + shared_expert_parameters(m) + m.top_k * routed_expert_parameters(m))
            : double(dense_ffn_parameters(m));
    // Recomputation runs the forward (2 FLOPs per parameter, a third of the core) again; MLA's
    // latent projections run whole on every tp rank.
    const double passes = base_gemm_passes(m) + (recompute ? 2 : 0);
    const double core = attention_core_flops_per_token(m) * (recompute ? 4.0 / 3 : 1.0);
    const double latent = double(mla_latent_parameters(m)) * (tp - 1);
    return (passes * (double(attention_matrix_parameters(m)) + ffn + latent) + core) / tp + lora_flops(layer);
  }
};

double ring(double bytes, double ranks) { return ranks > 1 ? 2 * (ranks - 1) / ranks * bytes : 0; }
double bandwidth(double gbps) { return gbps > 0 ? gbps * 1e9 : 1e-30; }

// What every stage's plan reads: the config, cluster and layout, and what follows from them.
struct Setting {
  const Config& cfg;
  const Cluster& c;
  const Layout& l;
  const PlanOptions& opt;
  Shard sh;
  ElementBytes eb;
  int v;                             // chunks per stage (parallel.virtual_stages, or DualPipeV's 2)
  double N, mbs, C, V;               // tokens per micro-batch; micro-batches per step; d_model; vocabulary
  double peak;                       // FLOP/s
  double tp_link, pp_link, dp_link;  // bytes/s
  // Rows a token sends per MoE layer inside its node and across nodes, and the kept
  // assignments each of them carries (ep_links).
  double remote_intra, remote_inter, per_intra_row, per_inter_row;
  bool two_hops;       // hierarchical across nodes: the intra-node rows travel after the network's
  double intra_share;  // of the other ranks of an ep group, those on this rank's node
};

// One stage's blocks (virtual stages s, pp + s, ...: plan/stages.h, as the trainer splits),
// summed.
struct StageSums {
  bool first = false, last = false;  // holds the embedding / the loss
  double layers = 0, moe_blocks = 0;
  double dense = 0, experts = 0;  // parameters on this device: replicated over dp / over edp
  double replicas = 0;  // redundant experts' copies (parallel.redundant_experts): weights and gradients, not trained
  double trained_dense = 0, trained_experts = 0;  // of them, trained (LoRA: the adapters alone)
  double held = 0;                                // trained ones updated by this rank's optimizer (ZeRO-1: a shard)
  Elems saved;                                    // per token, all blocks
  std::vector<Elems> chunk_saved;
  std::vector<double> chunk_blocks;
  std::vector<double> chunk_grad_outputs;  // per token: the GEMMs' dy (Shard::grad_outputs)
  Elems ends, head_ends;  // the embedding's (first chunk of the first stage), the loss's (last chunk of the last)
  double largest_block = 0, workspace = 0;
  double end_workspace = 0, head_workspace = 0;
  double flops_per_token = 0;
};

StageSums sum_stage(const Setting& g, const std::vector<std::int64_t>& bounds, int s) {
  const ModelConfig& m = g.cfg.model;
  const int v = g.v;
  StageSums z;
  const PipeShape shape = pipe_shape(g.cfg, g.l.pp);
  z.first = s == 0, z.last = shape.stage_of(shape.last()) == s;  // (the V's turn brings the loss back to stage 0)
  z.chunk_saved.resize(std::size_t(v)), z.chunk_blocks.assign(std::size_t(v), 0),
      z.chunk_grad_outputs.assign(std::size_t(v), 0);
  const auto add_block = [&](std::int64_t b, int c) {
    z.dense += g.sh.block_weights(b);
    z.experts += g.sh.block_experts(b);
    z.trained_dense += g.sh.block_trained(b, false);
    z.trained_experts += g.sh.block_trained(b, true);
    const Elems e = g.sh.saved(b);
    z.saved += e;
    z.chunk_saved[std::size_t(c)] += e;
    z.chunk_blocks[std::size_t(c)] += 1;
    z.chunk_grad_outputs[std::size_t(c)] += g.sh.grad_outputs(b);
    z.largest_block = std::max(z.largest_block, e.bytes(g.eb));
    z.workspace = std::max(z.workspace, g.sh.workspace(b));
    z.moe_blocks += is_moe_layer(m, b);
    z.replicas += is_moe_layer(m, b) ? double(g.cfg.parallel.redundant_experts * routed_expert_parameters(m)) : 0;
    z.flops_per_token += g.sh.block_flops(b);
    z.layers += 1;
  };
  for (int c = 0; c < v; ++c) {
    const auto vs = std::size_t(shape.virtual_stage(s, c));
    for (auto b = bounds[vs]; b < bounds[vs + 1]; ++b) add_block(b, c);
  }
  const double C = g.C, V = g.V, tp = g.l.tp;
  const bool lora = m.lora.rank > 0;  // the tensors outside the blocks are then frozen
  const double passes = base_gemm_passes(m);
  const auto add_dense = [&](double n) { z.dense += n, z.trained_dense += lora ? 0 : n; };
  z.end_workspace = 3 * C;                                // dx, dprev and the gradient arriving from the next stage
  if (z.first) add_dense(V * C / tp), z.ends.other += C;  // embedding; its output
  if (z.last) {
    add_dense(V * C / tp + C);                                          // LM head, final norm
    z.head_ends = {.gemm = C, .other = 1 + V / tp + (tp > 1 ? 1 : 0)};  // xf | rstd, logits (tp: and their log-sum-exp)
    z.head_workspace = 2 * C + 1 + V / tp;                              // dx, dxf, dl, dlogits
    z.flops_per_token += passes * V * C / tp;
    // MTP (model/mtp.h) after the loss: per depth a block (layer n_layers + k), eh_proj and
    // three norms whole on every tp rank, and the head again; the embedding copied here.
    for (std::int64_t k = 0; k < m.mtp_depth; ++k) {
      add_block(m.n_layers + k, v - 1);
      const double eh = double(mtp_projection_parameters(m));
      add_dense(eh + 3 * C);
      // eh_proj's input | h, emb, the block's output, the depth's output, three rstd, logits (tp: lse)
      z.head_ends += {.gemm = 2 * C, .other = 4 * C + 3 + V / tp + (tp > 1 ? 1 : 0)};
      z.flops_per_token += passes * (V * C / tp + eh);
    }
    if (m.mtp_depth > 0 && !z.first) add_dense(V * C / tp);
  }
  const double trained = z.trained_dense + z.trained_experts;
  z.held = g.cfg.parallel.zero == 1 ? z.trained_dense / g.l.dp + z.trained_experts / g.l.edp() : trained;
  return z;
}

// Bytes stage s holds on one device; `in_flight`: the micro-batches whose activations it
// holds at once.
Plan::Memory stage_memory(const Setting& g, const StageSums& z, int s, std::int64_t micro_batches, double& in_flight) {
  const int v = g.v;
  const bool recompute = g.cfg.train.recompute;
  const double C = g.C, N = g.N;
  Plan::Memory mem;
  mem.weights = 4 * (z.dense + z.experts + z.replicas);
  mem.gradients = 4 * (z.trained_dense + z.trained_experts + z.replicas) +
                  (g.cfg.parallel.zero == 1 ? 4 * z.held : 0);  // ZeRO-1's reduce-scatter output
  mem.optimizer = 8 * z.held;
  // What one (micro-batch, chunk) unit keeps until its backward: its tokens, targets and
  // input (the first chunk of the first stage reads tokens instead), and what its blocks
  // saved (with recomputation: their inputs).
  auto kept = [&](int c) { return 2 + (z.first && c == 0 ? 0 : C); };
  auto unit_bytes = [&](int c) {
    Elems e = recompute ? Elems{.gemm = 0, .other = z.chunk_blocks[std::size_t(c)] * C} : z.chunk_saved[std::size_t(c)];
    if (z.first && c == 0) e += z.ends;
    if (z.last && c == v - 1) e += z.head_ends;
    return N * (e.bytes(g.eb) + kept(c) * g.eb.other);
  };
  // A backward whose weight gradients are split off keeps its GEMMs' inputs (recomputed ones
  // too) and output gradients until they run.
  auto split_bytes = [&](int c) {
    return N * (z.chunk_saved[std::size_t(c)].gemm * g.eb.gemm + z.chunk_grad_outputs[std::size_t(c)] * g.eb.other);
  };
  // The most held at once, walking the stage's own schedule (comm/pipeline.h): a unit is
  // held from its forward to the end of its backward, then what a split one keeps until its
  // weights.
  double held_now = 0;
  std::int64_t units = 0, most_units = 0;
  for (const PipeUnit& u : stage_schedule(g.cfg, g.l.pp, s, micro_batches)) {
    switch (u.pass) {
      case Pass::forward: held_now += unit_bytes(u.chunk); break;
      case Pass::backward: held_now -= unit_bytes(u.chunk); break;
      case Pass::inputs:  // (at its end the queue is full and the unit's saved tensors not yet dropped)
        mem.activations = std::max(mem.activations, held_now + split_bytes(u.chunk));
        held_now += split_bytes(u.chunk) - unit_bytes(u.chunk);
        break;
      case Pass::weights: held_now -= split_bytes(u.chunk); break;
    }
    if (u.pass != Pass::inputs) units += u.forward() ? 1 : -1;
    mem.activations = std::max(mem.activations, held_now);
    most_units = std::max(most_units, units);
  }
  in_flight = double(most_units) / v;
  // The loss's backward ends before the blocks' begins (and their recomputation with it).
  mem.workspace = N * std::max((z.end_workspace + z.workspace) * g.eb.other + (recompute ? z.largest_block : 0),
                               z.head_workspace * g.eb.other);
  mem.buffers =
      z.moe_blocks > 0 ? N * g.sh.dispatch_buffers() * g.eb.other : 0;  // (pp's: the kept input, the workspace's dout)
  return mem;
}

// Bytes one device of the stage sends per step, by axis.
struct StageBytes {
  double tp = 0, ep_intra = 0, ep_inter = 0, pp = 0, dp = 0, replicas = 0;
};

// parallel.overlap (model/moe.cpp): the shared experts' forward runs while the dispatch's
// payload travels, their backward while the output gradient does; each hides at most the
// other. Under the hierarchical dispatch only the first hop (across nodes) is then in flight.
double shared_overlap(const Setting& g, const StageSums& z, double tokens) {
  const ModelConfig& m = g.cfg.model;
  if (!g.cfg.parallel.overlap || z.moe_blocks == 0 || m.shared_experts == 0) return 0;
  const double rows = tokens / g.l.tp, C = g.C;  // dispatched per MoE block (each tp rank its 1/tp)
  const auto travel = [&](double row_bytes) {
    return rows * row_bytes *
           (g.remote_inter / bandwidth(g.c.inter_node_gbps) +
            (g.two_hops ? 0 : g.remote_intra / bandwidth(g.c.intra_node_gbps)));
  };
  // One pass of the shared experts: every token through 1/tp of them.
  const double flops = 2 * double(shared_expert_parameters(m)) / g.l.tp * tokens / g.peak;
  return z.moe_blocks * (std::min(flops, travel(C * g.eb.gemm)) + std::min(2 * flops, travel(C * g.eb.other)));
}

// DualPipeV's idle seconds per step (comm/pipeline.h schedule_span, messages free, F&B pairs
// unpaired as the trainer runs them: nothing overlaps inside a pair), its units in the GEMMs' proportions: forward,
// input gradient and weight gradient 2 FLOPs per parameter and token each; recomputation adds a forward to the input
// gradient; LoRA's frozen weights have no weight gradient worth a unit. `unit`: a forward and full backward.
double dualpipev_bubble(const Setting& g, double unit) {
  const double f = 1, bi = g.cfg.train.recompute ? 2 : 1, w = g.cfg.model.lora.rank > 0 ? 0 : 1;
  const auto m = static_cast<std::int64_t>(g.mbs);
  return dualpipev_idle(g.l.pp, m, f, bi, w, /*pairs=*/false, g.cfg.parallel.split_weight_grads) * unit / (f + bi + w);
}

// Seconds per step of stage s: compute, memory traffic, then each collective over its link.
Plan::Time stage_time(const Setting& g, const StageSums& z, StageBytes& bytes) {
  const ModelConfig& m = g.cfg.model;
  const double N = g.N, mbs = g.mbs, C = g.C, tp = g.l.tp, v = g.v;
  Plan::Time t;
  const double tokens = N * mbs;  // per dp rank per step
  t.compute = tokens * z.flops_per_token / g.peak;
  // The non-GEMM ops stream memory: every saved activation is written in forward and read in
  // backward, and so is its gradient (4 passes; recomputation writes and reads it once more);
  // AdamW reads weight, gradient and moments and writes three of them (28 bytes per parameter
  // it updates), and the gradients are zeroed and normed (8 bytes per parameter).
  double kept_per_micro_batch = 0;  // over the stage's chunks: tokens, targets and the input
  for (int c = 0; c < g.v; ++c) kept_per_micro_batch += 2 + (z.first && c == 0 ? 0 : C);
  const double act_passes = g.cfg.train.recompute ? 6 : 4;
  const double traffic =
      act_passes * mbs * N *
          (z.saved.bytes(g.eb) + z.ends.bytes(g.eb) + z.head_ends.bytes(g.eb) + kept_per_micro_batch * g.eb.other) +
      28 * z.held + 8 * (z.trained_dense + z.trained_experts);
  t.memory = traffic / bandwidth(g.c.memory_gbps);
  bytes.tp = 4 * ring(N * C * g.eb.other, tp) * z.layers * mbs;  // 2 all-reduces forward, 2 backward
  t.tp = bytes.tp / g.tp_link;
  // Per remote row, forward: dispatch (C in the GEMM input format, 2K metadata) and combine;
  // backward: the output gradient out and the input gradient back (and K gate gradients).
  // The combine and the input gradient are one FP32 sum per row under fp32, one BF16 row per
  // assignment otherwise (model/moe.h): as many rows back as the row carries assignments.
  const auto row = [&](double assignments) {
    const double back = g.cfg.precision == Precision::fp32 ? 1.0 : assignments;
    return C * g.eb.gemm + C * g.eb.other * (1 + 2 * back) + 3 * double(m.top_k) * 4;
  };
  const double ep_rows = tokens / tp * z.moe_blocks;
  bytes.ep_intra = ep_rows * g.remote_intra * row(g.per_intra_row),
  bytes.ep_inter = ep_rows * g.remote_inter * row(g.per_inter_row);
  t.ep = bytes.ep_intra / bandwidth(g.c.intra_node_gbps) + bytes.ep_inter / bandwidth(g.c.inter_node_gbps);
  // Redundant experts: once a step (outside the schedule, nothing overlapping them) the
  // owners' FP32 weights go out to their replicas and the replicas' gradients come back
  // (model/replicas.h), inside the node where the dispatch is hierarchical (replicas stay on
  // their expert's node), else over the node's share of the links.
  bytes.replicas = 2 * 4 * z.replicas;
  const double inside = g.two_hops || g.remote_inter == 0 ? 1 : g.intra_share;
  t.replicas =
      bytes.replicas * (inside / bandwidth(g.c.intra_node_gbps) + (1 - inside) / bandwidth(g.c.inter_node_gbps));
  bytes.pp = g.l.pp > 1 ? 2 * N * C * g.eb.other * mbs * v : 0;  // per micro-batch and chunk
  t.pp = bytes.pp / g.pp_link;
  bytes.dp = ring(4 * z.trained_dense, g.l.dp) +
             ring(4 * z.trained_experts, g.l.edp());  // FP32 gradients (ZeRO-1: half of it weights)
  t.dp = bytes.dp / g.dp_link;
  const double shared = shared_overlap(g, z, tokens);
  t.hidden = std::min(shared + g.opt.overlap * (t.ep - shared + t.dp), t.compute + t.memory);
  const double unit = (t.compute + t.memory + t.tp + t.ep + t.pp) / (mbs * v);  // one micro-batch through one chunk
  t.bubble = g.cfg.parallel.schedule == PipeSchedule::dualpipev ? dualpipev_bubble(g, unit) : (g.l.pp - 1) * unit;
  return t;
}

// Of `units` equal parts of the experts (ep ranks, or nodes), the ones a token may reach:
// group-limited routing confines it to topk_groups groups' parts.
double reachable(const ModelConfig& m, double units) {
  const bool limited = m.routed_experts > 0 && m.topk_groups < m.n_groups;
  return limited ? std::min(units, double(m.topk_groups) * std::max(1.0, units / double(m.n_groups))) : units;
}

// Experts a token reaches live on r distinct ranks of its ep group.
double ranks_per_token(const ModelConfig& m, double ep) { return distinct(reachable(m, ep), double(m.top_k)); }

// The rows of one token's dispatch by link (model/dispatch.h), its experts on r distinct ranks
// of an ep group spanning ep / node_ranks nodes. Flat: one row per other rank, r (node_ranks
// - 1) / ep of them inside the node. Hierarchical: one row per other node its experts are on,
// to the rank at the sender's place there, which forwards it to the node's other ranks
// holding them (of each node's share of r, all but the forwarder's own: r (node_ranks - 1) /
// node_ranks rows). Node-limited routing: groups of ep / n_groups ranks, topk_groups of them.
struct EpLinks {
  double intra, inter;          // rows per token
  double nodes;                 // distinct nodes its experts are on
  double per_intra, per_inter;  // kept assignments per row
};
// A node-reduced combine brings one row back across per row sent (its assignments summed).
EpLinks ep_links(const ModelConfig& m, double ep, double node_ranks, double r, bool hierarchical, bool node_reduced) {
  const double nodes = ep / node_ranks, K = double(m.top_k);
  const double per_token = std::min(r, distinct(reachable(m, nodes), K)), per_rank = K / std::max(1.0, r);
  if (!hierarchical || nodes <= 1)
    return {r * (node_ranks - 1) / ep, r * (ep - node_ranks) / ep, per_token, per_rank, per_rank};
  return {r * (node_ranks - 1) / node_ranks, per_token * (nodes - 1) / nodes, per_token, per_rank,
          node_reduced ? 1.0 : K / std::max(1.0, per_token)};
}

// The step's totals: tokens, model FLOPs, GEMM FLOPs.
// The LoRA factors every tp rank runs whole (model/lora.h): their FLOPs per token on the
// tp - 1 other ranks.
double lora_tp_flops(const Config& cfg, const Layout& l) {
  if (l.tp == 1) return 0;
  const Shard whole{.m = cfg.model,
                    .tp = 1,
                    .ep = 1,
                    .r = 1,
                    .load = 1,
                    .fused = false,
                    .recompute = cfg.train.recompute,
                    .lora = lora_sites(cfg.model)};
  double f = 0;
  for (const LoraSite& s : whole.lora) {
    if (s.experts > 0) continue;  // routed experts: each rank its own tokens
    const auto [a, b] = whole.lora_site_flops(s);
    f += s.split == LoraSite::Split::columns ? a : s.split == LoraSite::Split::rows ? b : a + b;
  }
  return f * (l.tp - 1);
}

void plan_totals(Plan& p, const Config& cfg, const Layout& l) {
  const ModelConfig& m = cfg.model;
  p.layout = l;
  p.zero = static_cast<int>(cfg.parallel.zero);
  p.micro_batch = cfg.train.micro_batch;
  p.micro_batches = cfg.train.grad_accum;
  p.tokens_per_step = double(p.micro_batch) * double(m.seq_len) * double(p.micro_batches) * l.dp;
  p.flops_per_step = p.tokens_per_step * training_flops_per_token(m);
  p.gemm_flops_per_step =
      p.flops_per_step + (cfg.train.recompute ? p.tokens_per_step * recompute_flops_per_token(m) : 0);
  // Under tp every rank routes all tokens (model/moe.h): the router's GEMMs run tp times.
  // (Recomputation routes them once more.)
  // So do MLA's latent projections, in every block (MTP's too).
  const double passes = base_gemm_passes(m), per_pass = passes + (cfg.train.recompute ? 2.0 : 0.0);
  const double router_flops = double(moe_layers(m)) * per_pass * double(router_parameters(m)) * (l.tp - 1);
  const double latent_flops = double(blocks(m)) * per_pass * double(mla_latent_parameters(m)) * (l.tp - 1);
  // And each MTP depth's eh_proj (not recomputed).
  const double mtp_flops = double(m.mtp_depth) * passes * double(mtp_projection_parameters(m)) * (l.tp - 1);
  p.gemm_flops_per_step += p.tokens_per_step * (router_flops + latent_flops + mtp_flops + lora_tp_flops(cfg, l));
}

}  // namespace

double expert_load_bound(const ModelConfig& m, const Layout& l) {
  if (m.routed_experts == 0) return 1;
  const double K = double(m.top_k), El = double(m.routed_experts) / l.ep;
  const double collapse = l.ep * std::min(K, El) / K;
  return m.capacity_factor > 0 ? std::min(m.capacity_factor, collapse) : collapse;
}

Plan make_plan(const Config& cfg, const Cluster& c, const Layout& l, const PlanOptions& opt) {
  const ModelConfig& m = cfg.model;
  Plan p;
  plan_totals(p, cfg, l);
  p.device_memory = c.memory_gb * 1e9;
  p.ranks_per_token = ranks_per_token(m, l.ep);
  const double ep = l.ep, node_ranks = std::min(ep, double(c.devices_per_node));
  const EpLinks links =
      ep_links(m, ep, node_ranks, p.ranks_per_token, cfg.parallel.dispatch == DispatchKind::hierarchical,
               cfg.parallel.node_reduced_combine);
  p.nodes_per_token = links.nodes;
  const Setting g{.cfg = cfg,
                  .c = c,
                  .l = l,
                  .opt = opt,
                  .sh = {.m = m,
                         .tp = double(l.tp),
                         .ep = ep,
                         .r = p.ranks_per_token,
                         .load = opt.load,
                         .fused = cfg.device == DeviceKind::cuda,
                         .recompute = cfg.train.recompute,
                         .lora = lora_sites(m)},
                  .eb = element_bytes(cfg.precision),
                  .v = static_cast<int>(cfg.parallel.chunks()),
                  .N = double(p.micro_batch) * double(m.seq_len),
                  .mbs = double(p.micro_batches),
                  .C = double(m.d_model),
                  .V = double(m.vocab_size),
                  .peak = c.peak_tflops(cfg.precision) * 1e12 * c.compute_efficiency,
                  .tp_link = bandwidth(l.tp <= c.devices_per_node ? c.intra_node_gbps : c.inter_node_gbps),
                  .pp_link = bandwidth(l.dp * l.tp >= c.devices_per_node ? c.inter_node_gbps : c.intra_node_gbps),
                  .dp_link = bandwidth(l.dp * l.tp > c.devices_per_node ? c.inter_node_gbps : c.intra_node_gbps),
                  .remote_intra = links.intra,
                  .remote_inter = links.inter,
                  .per_intra_row = links.per_intra,
                  .per_inter_row = links.per_inter,
                  .two_hops = cfg.parallel.dispatch == DispatchKind::hierarchical && ep > node_ranks,
                  .intra_share = ep > 1 ? (node_ranks - 1) / (ep - 1) : 1};
  // The plan is the most loaded stage's memory and the slowest stage's time.
  const auto bounds = stage_bounds(cfg, l.pp * g.v);
  double worst_step = -1;
  for (int s = 0; s < l.pp; ++s) {
    const StageSums z = sum_stage(g, bounds, s);
    double in_flight = 1;
    const Plan::Memory mem = stage_memory(g, z, s, p.micro_batches, in_flight);
    StageBytes bytes;
    const Plan::Time t = stage_time(g, z, bytes);
    if (mem.total() > p.memory.total()) p.memory = mem, p.memory_stage = s, p.in_flight = in_flight;
    if (t.step() > worst_step) {
      worst_step = t.step(), p.time = t;
      p.tp_bytes = bytes.tp, p.ep_intra_bytes = bytes.ep_intra, p.ep_inter_bytes = bytes.ep_inter,
      p.pp_bytes = bytes.pp, p.dp_bytes = bytes.dp, p.replica_bytes = bytes.replicas;
    }
  }
  return p;
}

std::vector<Plan> search_layouts(const Config& cfg, const Cluster& c, int devices, const PlanOptions& opt) {
  const ModelConfig& m = cfg.model;
  // The config's global batch in sequences: its own dp (or what dp = 0 resolves to on `devices`).
  const auto& own = cfg.parallel;
  const std::int64_t dp0 = own.dp > 0 ? own.dp : std::max<std::int64_t>(1, devices / (own.tp * own.pp));
  const std::int64_t global = dp0 * cfg.train.micro_batch * cfg.train.grad_accum;
  std::vector<Plan> out;
  const std::int64_t v = cfg.parallel.chunks();
  const bool dualpipev = cfg.parallel.schedule == PipeSchedule::dualpipev;
  for (int pp = 1; pp <= devices; ++pp) {
    if (devices % pp || pp * v > m.n_layers || (v > 1 && pp == 1)) continue;
    for (int tp = 1; tp <= devices / pp; ++tp) {
      if ((devices / pp) % tp || tp > c.devices_per_node || m.n_heads % tp || m.vocab_size % tp) continue;
      if (m.attention == AttentionType::gqa && m.n_kv_heads % tp) continue;
      if (((m.dense_layers > 0 || m.routed_experts == 0) && m.ffn_hidden % tp) ||
          (m.shared_experts * m.expert_hidden) % tp)
        continue;
      const int dp = devices / pp / tp;
      if (global % (std::int64_t(dp) * cfg.train.micro_batch)) continue;
      for (int ep = 1; ep <= dp * tp; ++ep) {
        if ((dp * tp) % ep || (m.routed_experts > 0 ? m.routed_experts % ep : ep > 1)) continue;
        for (int zero = 0; zero <= 1; ++zero) {
          Config k = cfg;
          k.parallel.pp = pp, k.parallel.tp = tp, k.parallel.dp = dp, k.parallel.ep = ep, k.parallel.zero = zero;
          k.train.grad_accum = global / (std::int64_t(dp) * cfg.train.micro_batch);
          if (dualpipev ? k.train.grad_accum < 2 * pp : v > 1 && k.train.grad_accum % pp) continue;
          Plan p = make_plan(k, c, Layout{pp, dp, tp, ep}, opt);
          if (p.fits()) out.push_back(p);
        }
      }
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Plan& a, const Plan& b) {
    return a.time.step() != b.time.step() ? a.time.step() < b.time.step() : a.memory.total() < b.memory.total();
  });
  return out;
}

std::string layout_name(const Plan& p) {
  return fmt::format("pp {} x dp {} x tp {}, ep {}, zero {}", p.layout.pp, p.layout.dp, p.layout.tp, p.layout.ep,
                     p.zero);
}

}  // namespace moe
