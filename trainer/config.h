// The run configuration: typed structs filled from YAML plus `--set key=value` overrides.
// Every key is registered once in config.cpp (type, range, default, doc); that registry
// drives parsing, validation, printing the resolved config and the README's reference.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe {

enum class Precision { fp32, bf16, fp8 };
enum class DeviceKind { cpu, cuda };
enum class RouterType { sigmoid, softmax };
enum class LrSchedule { cosine, linear, constant };

struct ModelConfig {
  std::int64_t vocab_size = 257;     // bytes + end-of-document: the skeleton's byte-level vocabulary
  std::int64_t seq_len = 64;
  std::int64_t d_model = 64;
  std::int64_t n_layers = 2;
  std::int64_t n_heads = 4;
  std::int64_t n_kv_heads = 2;
  std::int64_t ffn_hidden = 128;     // dense FFN width
  std::int64_t dense_layers = 1;     // the first blocks use a dense FFN, the rest MoE
  std::int64_t routed_experts = 8;
  std::int64_t shared_experts = 1;
  std::int64_t top_k = 2;
  std::int64_t expert_hidden = 32;
  RouterType router = RouterType::sigmoid;
  bool router_normalize = true;
  std::int64_t n_groups = 1;
  std::int64_t topk_groups = 1;
  double routed_scaling_factor = 1.0;
  double bias_update_rate = 1e-3;
  double aux_loss_coef = 0.0;
  double capacity_factor = 0.0;      // 0 = dropless
  double norm_eps = 1e-6;
  double rope_theta = 10000.0;
  double init_std = 0.02;
};

struct TrainConfig {
  std::int64_t steps = 100;
  std::int64_t micro_batch = 4;
  std::int64_t grad_accum = 1;
  double lr = 3e-3;
  double min_lr = 3e-4;
  std::int64_t warmup_steps = 10;
  LrSchedule lr_schedule = LrSchedule::cosine;
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;            // 0 = off
  std::int64_t seed = 1234;
  std::int64_t log_every = 10;
  double target_tokens = 0.0;        // for the cost projection; 0 = none
};

struct DataConfig {
  std::string corpus = "/usr/share/games/fortunes";
  double val_fraction = 0.05;
};

struct ParallelConfig {
  std::int64_t dp = 0;  // 0 = world / (tp * pp)
  std::int64_t tp = 1;
  std::int64_t pp = 1;
  std::int64_t ep = 1;
  std::int64_t zero = 0;
};

struct CheckpointConfig {
  std::string dir = "runs/tiny";
  std::int64_t every = 0;  // 0 = only at the end
  std::int64_t keep = 3;
};

struct CostConfig {
  std::string cluster = "local-cpu";
};

struct Config {
  Precision precision = Precision::fp32;
  DeviceKind device = DeviceKind::cpu;
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  CostConfig cost;

  // Where each explicitly set key came from ("file:line" or "--set"), for error messages.
  std::string source;
  std::map<std::string, std::string> origin;
};

// Parses YAML text (source names it in errors), applies overrides ("a.b=value"), validates.
// Throws ConfigError with one line: "<file>:<line>: <key>: <what is wrong>".
Config parse_config(const std::string& yaml_text, const std::string& source,
                    const std::vector<std::string>& overrides = {});
// Reads the file, then as parse_config.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

std::string config_to_yaml(const Config& c);      // the resolved config, every key
std::string config_reference_markdown();          // the README's table of keys
std::vector<std::string> config_keys();           // all dotted keys, in order

}  // namespace moe
