// What a run costs (docs/COST.md): the cluster it is priced on (configs/clusters/NAME.yaml),
// the model FLOPs per token, and the report printed at the end of every run and written as
// cost.json beside the checkpoints. Counters accumulate across resumes (they live in the
// checkpoint).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parallel/communicator.h"
#include "trainer/config.h"

namespace moe {

struct Cluster {
  std::string name, device, file;
  double peak_bf16_tflops = 0, peak_fp8_tflops = 0;  // per device, dense
  double memory_gb = 0, intra_node_gbps = 0, inter_node_gbps = 0, price_per_device_hour = 0;
  std::int64_t devices_per_node = 1;
  bool calibrate = false;  // local-cpu: the peak is measured when a run starts
  // Peak TFLOP/s per device for a precision (fp32 and bf16 runs are priced at the BF16 peak,
  // as mixed-precision training is; on a calibrated CPU, the measured f32 GEMM rate).
  double peak_tflops(Precision p) const { return p == Precision::fp8 ? peak_fp8_tflops : peak_bf16_tflops; }
};

// cost.cluster: a name (looked up as clusters/NAME.yaml beside the config file, then in the
// source tree's configs/clusters) or a path to a .yaml file. ConfigError naming the file and key.
Cluster load_cluster(const Config& cfg);

// local-cpu: one rank's f32 GEMM rate (1024^3, best of 3) becomes the peak; the all-reduce
// bus bandwidth over `world` (16 MiB, best of 3; 0 on one rank) the interconnect. Collective.
void calibrate(Cluster& c, Communicator& world);

// Model parameters a token passes through (attention, dense FFN or shared + top_k routed
// experts and the router, final norm and LM head; not the embedding lookup), and training
// FLOPs per token: 6 x that + 12 x layers x heads x head_dim x seq_len for attention
// (PaLM's convention, no causal discount).
std::int64_t active_parameters(const ModelConfig& m);
// Every parameter (all experts, the embedding included); routed experts alone.
std::int64_t total_parameters(const ModelConfig& m);
std::int64_t expert_parameters(const ModelConfig& m);
double training_flops_per_token(const ModelConfig& m);

// Bytes of FP32 weights, gradients and AdamW moments one rank holds under a layout (what
// `moe train --dry-run` prints; ZeRO-1's padding to a multiple of the group size aside).
// Activations are not estimated yet (the planner of issue 10).
struct MemoryPerRank {
  double weights = 0, gradients = 0, optimizer = 0;
};
MemoryPerRank memory_per_rank(const Config& cfg, int dp, int ep);

// Device-hours by where the time went, and what was done, over every launch of a run.
struct CostCounters {
  double compute = 0, communication = 0, evaluation = 0, checkpoint = 0;  // device-hours
  double tokens = 0, flops = 0, train_seconds = 0;                        // train_seconds: wall, excluding eval and checkpoints
  double device_hours() const { return compute + communication + evaluation + checkpoint; }
  CostCounters& operator+=(const CostCounters& o);
};

// "552.6 KB": bytes in decimal units, for logs and reports.
std::string human_bytes(double bytes);

// The report: text for the end of the run, JSON for cost.json.
nlohmann::json cost_json(const Cluster& c, const CostCounters& k, const Config& cfg, int world);
std::string cost_text(const nlohmann::json& report);

}  // namespace moe
