// The planner (`moe plan`, docs/COST.md): per-device memory and step time of a config under a
// layout on a cluster, from counts alone, and a search over layouts ranked by cost. Every
// `moe train` prints its own plan next to what it measured.
//
// The model is the trainer's: memory counts the tensors this implementation keeps (FP32
// master weights, FP32 gradients, FP32 AdamW moments sharded by ZeRO-1, the activations each
// layer saves for backward, the backward's own buffers), with element sizes set by the
// precision; time is FLOPs at the cluster's achievable rate plus the bytes of each collective
// over the link it crosses, with a 1F1B pipeline bubble and an optional overlap share.
#pragma once
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "plan/cluster.h"
#include "config/config.h"

namespace moe {

// The activation policy comes from the config (train.recompute, precision, device).
struct PlanOptions {
  double overlap = 0;  // share of the EP all-to-all and DP gradient traffic hidden behind compute (0: moe train today)
  // The expert rows the most loaded rank receives over the balanced load: its memory (and the
  // memory traffic of its other ops); GEMMs and communication stay those of balance. For the
  // worst-case memory of plan_text's imbalance line.
  double load = 1;
  // The imbalance plan_text states its worst-case memory at (0: expert_load_bound's).
  double imbalance = 0;
};

struct Plan {
  Layout layout;
  int zero = 0;
  std::int64_t micro_batch = 1, micro_batches = 1;  // sequences per micro-batch; micro-batches per step per dp rank
  double tokens_per_step = 0;
  double flops_per_step = 0;       // the model's (training_flops_per_token): what MFU counts
  double gemm_flops_per_step = 0;  // what the GEMMs run: recomputation adds its forward

  // Bytes per device on the most loaded pipeline stage (memory_stage).
  struct Memory {
    double weights = 0, gradients = 0, optimizer = 0, activations = 0, workspace = 0, buffers = 0;
    double total() const { return weights + gradients + optimizer + activations + workspace + buffers; }
  } memory;
  int memory_stage = 0;
  double in_flight = 1;      // micro-batches whose activations that stage holds at once (1F1B)
  double device_memory = 0;  // the cluster's, bytes
  bool fits() const { return memory.total() <= device_memory; }

  // Seconds per step on the slowest stage; bytes per device per step by kind.
  // compute: GEMMs; memory: the other ops, bound by memory bandwidth (each saved activation
  // written and read once, its gradient too; AdamW's passes over its state).
  struct Time {
    double compute = 0, memory = 0, tp = 0, ep = 0, pp = 0, dp = 0, hidden = 0, bubble = 0;
    double replicas = 0;  // redundant experts' copies to and from their owners
    double step() const { return compute + memory + tp + ep + pp + dp - hidden + bubble + replicas; }
  } time;
  double tp_bytes = 0, ep_intra_bytes = 0, ep_inter_bytes = 0, pp_bytes = 0, dp_bytes = 0, replica_bytes = 0;
  double ranks_per_token = 1;  // expected distinct ep ranks a token's experts live on
  double nodes_per_token = 1;  // and nodes (hierarchical dispatch: its rows across nodes)

  // At the cluster's price, for the config's train.target_tokens (0: none).
  double tokens_per_day() const { return tokens_per_step / time.step() * 86400; }
  double device_hours(double tokens) const { return tokens / tokens_per_step * time.step() / 3600 * layout.world(); }
  double mfu(double peak_flops) const { return flops_per_step / layout.world() / time.step() / peak_flops; }
};

// The plan of one layout (already resolved against the device count). Throws ConfigError for
// a layout the model cannot take (checked by resolve_layout and the config's own rules).
Plan make_plan(const Config& cfg, const Cluster& cluster, const Layout& layout, const PlanOptions& opt = {});

// Every valid layout of `devices` (pp dividing the layers, tp inside a node and dividing the
// heads, ep dividing the experts and dp x tp, zero 0 or 1) with the config's global batch,
// cheapest first; those that do not fit are dropped.
std::vector<Plan> search_layouts(const Config& cfg, const Cluster& cluster, int devices, const PlanOptions& opt = {});

// "552.6 KB": bytes in decimal units, for logs and reports.
std::string human_bytes(double bytes);
// "pp 16 x dp 128 x tp 1, ep 64, zero 1"
std::string layout_name(const Plan& p);
// The report `moe plan` prints: memory, time, cost, assumptions.
std::string plan_text(const Plan& p, const Config& cfg, const Cluster& cluster, const PlanOptions& opt);

// The most expert rows one rank of the layout can receive, over the balanced load: every
// token's top-k all on that rank (ep min(top_k, experts per rank) / top_k: routing collapse),
// or under model.capacity_factor f at most f (each expert keeps f times its share).
double expert_load_bound(const ModelConfig& m, const Layout& l);

}  // namespace moe
