// `moe plan`'s report: what the plan says and what it assumed.
#include <fmt/format.h>

#include "plan/counts.h"
#include "plan/plan.h"

namespace moe {
namespace {

std::string seconds(double s) {
  if (s >= 1) return fmt::format("{:.3f} s", s);
  if (s >= 1e-3) return fmt::format("{:.3f} ms", s * 1e3);
  return fmt::format("{:.1f} us", s * 1e6);
}

// How the pipeline's idle time was priced (plan.cpp stage_time).
std::string bubble_assumption(const Config& cfg) {
  if (cfg.parallel.schedule == PipeSchedule::dualpipev)
    return "DualPipeV bubble from its schedule simulated with equal stages (forward, input-gradient and "
           "weight-gradient units in the GEMMs' 1:1:1, recomputation adding a forward to the input gradient; F&B "
           "pairs run apart, nothing overlapping inside them)";
  return cfg.parallel.virtual_stages > 1 ? "interleaved 1F1B bubble (pp-1)/(v m) of the pipeline's time"
                                         : "1F1B bubble (pp-1)/m of the pipeline's time";
}
}  // namespace

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KB", "MB", "GB"};
  int u = 0;
  while (b >= 1000 && u < 3) b /= 1000, ++u;
  return fmt::format("{:.1f} {}", b, unit[u]);
}

// The memory of the most loaded rank at the stated imbalance (or the run's bound).
std::string imbalance_line(const Plan& p, const Config& cfg, const Cluster& c, const PlanOptions& opt) {
  const ModelConfig& m = cfg.model;
  if (m.routed_experts == 0 || p.layout.ep == 1) return "";  // the experts' rows total N top_k wherever they go
  PlanOptions worst = opt;
  worst.load = opt.imbalance > 0 ? opt.imbalance : expert_load_bound(m, p.layout);
  const Plan w = make_plan(cfg, c, p.layout, worst);
  const char* why = opt.imbalance > 0       ? "stated by --imbalance"
                    : m.capacity_factor > 0 ? "the most model.capacity_factor lets one rank receive"
                                            : "routing collapse, every token's experts on one rank; "
                                              "model.capacity_factor bounds it";
  return fmt::format("imbalance         {:.3g}x the balanced expert rows on one rank ({}): {} per device, {}\n",
                     worst.load, why, human_bytes(w.memory.total()), w.fits() ? "fits" : "DOES NOT FIT");
}

std::string plan_text(const Plan& p, const Config& cfg, const Cluster& c, const PlanOptions& opt) {
  const ModelConfig& m = cfg.model;
  const auto& mem = p.memory;
  const auto& t = p.time;
  const double step = t.step();
  const double peak = c.peak_tflops(cfg.precision) * 1e12;
  std::string s = fmt::format(
      "plan: {} on {} x {} ({}), {}\n"
      "model             {:.4g} parameters, {:.4g} active per token, {:.4g} training FLOP per token\n"
      "batch             {} sequences x {} tokens = {:.0f} tokens per step ({} micro-batches of {} per dp rank)\n",
      cfg.source, p.layout.world(), c.name, c.device, layout_name(p), double(total_parameters(m)),
      double(active_parameters(m)), training_flops_per_token(m), p.tokens_per_step / double(m.seq_len), m.seq_len,
      p.tokens_per_step, p.micro_batches, p.micro_batch);
  s += fmt::format(
      "memory per device {} of {} ({}) on stage {}: weights {}, gradients {}, optimizer {}, activations {} "
      "({:.3g} micro-batches in flight), backward workspace {}, communication buffers {}\n",
      human_bytes(mem.total()), human_bytes(p.device_memory), p.fits() ? "fits" : "DOES NOT FIT", p.memory_stage,
      human_bytes(mem.weights), human_bytes(mem.gradients), human_bytes(mem.optimizer), human_bytes(mem.activations),
      p.in_flight, human_bytes(mem.workspace), human_bytes(mem.buffers));
  s += imbalance_line(p, cfg, c, opt);
  if (const auto R = cfg.parallel.redundant_experts; R > 0 && m.routed_experts > 0) {
    const double copy = 4.0 * double(R * routed_expert_parameters(m));  // FP32, per MoE layer
    s += fmt::format(
        "redundant experts {} slots a rank: {} of copies and as much of their gradients per MoE layer, {} a step "
        "to and from their owners ({} a step on the slowest stage); they balance skewed routing (the run reports "
        "expert_rank_imbalance), the balanced rows planned here need none\n",
        R, human_bytes(copy), human_bytes(p.replica_bytes), seconds(t.replicas));
  }
  s += fmt::format(
      "step time         {}: GEMMs {}, other ops {}, tensor-parallel {}, expert all-to-all {}, pipeline p2p {}, "
      "data-parallel {}, "
      "hidden by overlap -{}, pipeline bubble {}\n"
      "traffic per step  tp {}, ep {} in node + {} across nodes ({:.2f} ranks, {:.2f} nodes per token{}), pp {}, dp "
      "{}\n",
      seconds(step), seconds(t.compute), seconds(t.memory), seconds(t.tp), seconds(t.ep), seconds(t.pp), seconds(t.dp),
      seconds(t.hidden), seconds(t.bubble), human_bytes(p.tp_bytes), human_bytes(p.ep_intra_bytes),
      human_bytes(p.ep_inter_bytes), p.ranks_per_token, p.nodes_per_token,
      cfg.parallel.dispatch == DispatchKind::hierarchical ? ", hierarchical dispatch" : ", flat dispatch",
      human_bytes(p.pp_bytes), human_bytes(p.dp_bytes));
  s += fmt::format("throughput        {:.4g} tokens/day, MFU {:.1f}% of {:.4g} TFLOP/s per device\n",
                   p.tokens_per_day(), 100 * p.mfu(peak), peak / 1e12);
  if (cfg.train.target_tokens > 0) {
    const double dh = p.device_hours(cfg.train.target_tokens);
    s += fmt::format("target            {:.4g} tokens: {:.4g} days, {:.4g} device-hours, ${:.4g} at ${}/device-hour\n",
                     cfg.train.target_tokens, dh / p.layout.world() / 24, dh, dh * c.price_per_device_hour,
                     c.price_per_device_hour);
  }
  s += fmt::format(
      "assumptions:\n"
      "  - GEMMs at {:.0f}% of the {} peak ({} in {}); other ops bound by {:.4g} GB/s of memory bandwidth\n"
      "  - {} elements: GEMM inputs saved as {}, other activations as {}; FP32 master weights, FP32 gradients, FP32 "
      "AdamW "
      "moments{}\n"
      "  - activations as this trainer saves them{}; {}\n"
      "  - experts balanced; a token's top-{} experts on {:.2f} distinct ep ranks (uniform inside its reachable "
      "groups)\n"
      "  - links: tp inside a node if tp <= {} devices per node; ep all-to-all split by node ({:.4g} / {:.4g} GB/s; "
      "hierarchical: once per other node a token's experts are on, then forwarded inside it); dp and pp "
      "over the network once a group leaves its node; rings move 2(n-1)/n of the data\n"
      "  - {}% of the ep and dp traffic overlapped with compute; {}\n",
      100 * c.compute_efficiency, cfg.precision == Precision::fp8 ? "FP8" : "BF16", "compute_efficiency", c.file,
      c.memory_gbps, precision_name(cfg.precision),
      cfg.precision == Precision::fp8    ? "E4M3 + 1/128 scale"
      : cfg.precision == Precision::bf16 ? "BF16"
                                         : "FP32",
      cfg.precision == Precision::fp32 ? "FP32" : "BF16", p.zero == 1 ? " (moments sharded over dp: ZeRO-1)" : "",
      cfg.device == DeviceKind::cuda ? " with fused attention (the softmax is recomputed)"
                                     : " (the CPU keeps the softmax)",
      cfg.train.recompute ? "full recomputation: one block input per layer kept" : "no recomputation", m.top_k,
      p.ranks_per_token, c.devices_per_node, c.intra_node_gbps, c.inter_node_gbps, 100 * opt.overlap,
      bubble_assumption(cfg));
  return s;
}

}  // namespace moe
