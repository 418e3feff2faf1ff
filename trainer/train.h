// `moe train`: the training loop over the MoE transformer on a process mesh: pipeline stages
// (1F1B, comm/pipeline.h) x data parallel (optionally ZeRO-1) x tensor parallel, with
// expert parallelism folded into dp x tp, over MPI.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/residency.h"

#include "parallel/mesh.h"
#include "trainer/cost.h"
#include "config/config.h"

namespace moe {

// Where a launch started from and what it saved.
struct ResumeInfo {
  // The checkpoint the run continued from (empty: a fresh start) and its step; fine-tuning's
  // initial weights and their validation loss; the last checkpoint written.
  std::string resumed_from, init_from, last_checkpoint;
  std::int64_t start_step = 0;
  double init_val_loss = 0;
  double prior_wall_seconds = 0;  // wall time of the segments before this one (wall_seconds includes it)
};

// The model's size, and this rank's share.
struct SizeInfo {
  std::int64_t parameters = 0, expert_parameters = 0;  // whole model; routed experts alone
  std::int64_t local_dense = 0, local_experts = 0;     // held by this rank: non-expert, routed experts
  std::size_t optimizer_bytes = 0;                     // AdamW moments held by this rank
  std::size_t optimizer_bytes_total = 0;               // AdamW moments of the whole model
};

// What this rank moved per step of this launch.
struct TrafficInfo {
  std::map<std::string, std::uint64_t> bytes_per_step;  // per collective kind, mean over steps
  int max_ranks_per_token = 1;                          // expert-parallel fan-out of the most spread token
  // Expert dispatch (mean; summed over MoE layers and micro-batches): kept assignments sent
  // to other ep ranks, and distinct (token, other rank) pairs among them (under the
  // hierarchical dispatch across nodes these three count nodes: its first hop's); their bytes as sent
  // (MoE::dispatch_bytes: FP32, BF16, or E4M3 plus scales, both hops of a hierarchical
  // dispatch), and the part of them that crossed nodes.
  double remote_rows = 0, remote_token_ranks = 0, dispatch_bytes = 0, inter_node_bytes = 0;
  // Host <-> device traffic of the training step with the most copies to the host
  // (kernels/residency.h: copies each way and host waits, validation and checkpoints left
  // out), and where they happened. All zero on the CPU.
  Traffic step_traffic;
  std::string step_traffic_sites;
};

// This launch's training steps measured, beside their plan (plan/plan.h, on the run's cluster
// and layout).
struct StepProfile {
  // Seconds per step (validation and checkpoints left out), the most bytes this rank's tensors
  // held at once, GEMM FLOPs per step over all ranks (ops::gemm_flops).
  double step_seconds = 0, planned_step_seconds = 0;
  double peak_tensor_bytes = 0, planned_memory_bytes = 0;
  // Of those: held before the first step (weights, gradients, optimizer state), and what the
  // plan puts on top during a step (activations, backward workspace, buffers).
  double start_tensor_bytes = 0, planned_step_memory_bytes = 0;
  double gemm_flops_per_step = 0, planned_flops_per_step = 0;
  // Pipeline: the share of the micro-batch schedule a rank spent outside its micro-batches'
  // forward and backward (mean over ranks), and the schedule's ideal for equal stages.
  double bubble = 0, ideal_bubble = 0;
  // DualPipeV: the GEMM weight gradients this rank computed in `weights` units in the last
  // step, split off their backward (model/linear.h WeightGrads).
  std::int64_t deferred_weight_grads = 0;
  // Activations forward saved for backward, the most this rank held at once (1F1B keeps
  // several micro-batches'; a split backward's queued dy and x count until its weights run),
  // and the GEMM inputs among them in their precision's form (model/linear.h: FP8 keeps a
  // quarter of FP32's bytes plus scales).
  std::size_t saved_bytes = 0, saved_gemm_bytes = 0;
  // The expert group's exchanges, per step: seconds inside them (counts, payload, waits) and
  // seconds this rank computed while they travelled (parallel.overlap: the shared experts).
  double expert_seconds = 0, expert_overlap_seconds = 0;
};

struct TrainResult {
  std::int64_t steps = 0;
  double tokens = 0;               // training tokens over all ranks
  std::vector<double> losses;      // training loss (CE + balance loss + weighted MTP loss) per step
  std::vector<double> grad_norms;  // global gradient norm per step, before clipping
  std::vector<double> mtp_losses;  // MTP: the depths' mean token cross-entropy per step (empty without)
  double val_loss = 0;             // last validation pass, mean token cross-entropy
  double unigram_entropy = 0;      // of the training split, from the prepared data (0 if unknown)
  double wall_seconds = 0;
  double device_hours = 0;         // ranks x wall time, over all segments of the run
  bool stopped = false;            // ended early by request_stop()
  std::string stop_signal;         // "SIGTERM" or "SIGINT"
  std::int64_t skipped_steps = 0;  // updates skipped in this launch (non-finite or spiking loss)
  // Per step: the most loaded expert-parallel rank's kept rows over the mean (replicas
  // included), mean over the MoE layers; 1 without ep.
  std::vector<double> rank_imbalance;
  double dropped = 0;  // expert assignments dropped by capacity in this launch, all ranks
  ResumeInfo resume;
  SizeInfo size;
  TrafficInfo traffic;
  StepProfile profile;
  CostCounters cost;        // every launch of the run so far
  std::string cost_report;  // the printed report (cost.json beside the checkpoints holds it as JSON)
};

// The layout resolved against the world and its nodes (parallel/mesh), then refused when this build
// cannot train it yet (a precision, a device, MLA): ConfigError before any compute.
Layout trainable_layout(const Config& cfg, MpiCommunicator& world);

// Set from a signal handler (SIGTERM: a scheduler preempting the job): the run stops after
// the step in flight, all ranks at the same step, with a checkpoint. Async-signal-safe.
void request_stop(int signal);

// Learning rate at 0-based `step`: linear warm-up, then the configured schedule.
double learning_rate(const TrainConfig& t, std::int64_t step);
// The MTP loss weight at 0-based `step`: train.mtp_loss_weight, then mtp_loss_weight_final
// from step mtp_final_fraction x steps on.
double mtp_loss_weight(const TrainConfig& t, std::int64_t step);

class Trainer {
 public:
  // Resolves the layout against world's size (ConfigError before any compute), builds the
  // mesh, the model (experts sharded over ep) and the optimizer groups.
  Trainer(const Config& cfg, MpiCommunicator& world);
  ~Trainer();
  TrainResult run();
  // Every parameter and router bias at its full logical shape (experts gathered over ep),
  // on every rank: the layout-free view tests and checkpoints compare. With optimizer=true,
  // the AdamW moments too, as "exp_avg/<name>" and "exp_avg_sq/<name>" (ZeRO shards gathered).
  std::map<std::string, Tensor> gather_weights(bool optimizer = false);
  // A checkpoint of the current state as step `step` in checkpoint.dir (collective), and
  // loading one (weights, moments and router biases); run() calls these itself.
  std::string save_checkpoint(std::int64_t step);
  void load_checkpoint(const std::string& path);
  // Bytes of tensor data this rank writes to a checkpoint; the byte ranges of the file at
  // `path` it reads to load it (ckpt::read_extents).
  std::size_t checkpoint_bytes_written();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> checkpoint_read_extents(const std::string& path);

 private:
  struct State;
  struct Loop;  // one launch of the loop (trainer/loop.cpp)
  std::unique_ptr<State> s_;
};

inline TrainResult train(const Config& cfg, MpiCommunicator& world) { return Trainer(cfg, world).run(); }

}  // namespace moe
