// The run configuration: typed structs filled from YAML plus `--set key=value` overrides.
// Every key is registered once in config.cpp (type, range, default, doc); that registry
// drives parsing, validation, printing the resolved config and the README's reference.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config/chat_template.h"
#include "config/filter_options.h"
#include "kernels/device.h"
#include "config/model_config.h"

namespace moe {

enum class DeviceKind { cpu, cuda, sim };
// The device a run's tensors live on.
constexpr Device device_of(DeviceKind k) {
  return k == DeviceKind::cuda ? Device::cuda : k == DeviceKind::sim ? Device::sim : Device::cpu;
}
enum class LrSchedule { cosine, linear, constant, wsd };
// How routed tokens cross nodes (model/dispatch.h): once per destination node, forwarded
// inside it (hierarchical), or once per destination rank over whatever link (flat).
enum class DispatchKind { hierarchical, flat };
// The pipeline's schedule (comm/pipeline.h): 1F1B (interleaved with parallel.virtual_stages >
// 1) or DualPipeV (two chunks per stage in a V, weight gradients split off).
enum class PipeSchedule { one_f_one_b, dualpipev };

struct TrainConfig {
  std::int64_t steps = 100;
  std::int64_t stop_at = 0;  // end this launch after this step (checkpointed; 0 = run to steps)
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
  double grad_clip = 1.0;  // 0 = off
  std::int64_t seed = 1234;
  std::int64_t log_every = 10;
  std::int64_t eval_every = 0;  // 0 = at the end only
  std::int64_t eval_batches = 4;
  double decay_fraction = 0.2;         // wsd: share of the steps spent decaying
  double target_tokens = 0.0;          // for the cost projection; 0 = none
  std::vector<std::string> freeze;     // parameter name patterns (fnmatch) kept fixed
  bool recompute = false;              // blocks keep only their input; backward recomputes the rest
  std::int64_t max_skipped_steps = 5;  // consecutive skipped steps (non-finite or spiking loss) that stop the run
  double spike_zscore = 0.0;           // skip a step whose loss is this many std above the recent mean (0: off)
  std::int64_t spike_window = 100;     // applied steps the spike check looks back over
  double watchdog_s = 600;             // no progress for this long ends the job (0: off)
  // Multi-token prediction's loss weight: mtp_loss_weight, then mtp_loss_weight_final from
  // step mtp_final_fraction x steps on (DeepSeek-V3: 0.3, then 0.1 for the last third).
  double mtp_loss_weight = 0.3;
  double mtp_loss_weight_final = 0.1;
  double mtp_final_fraction = 1.0;  // 1: the final weight never applies
};

// One prepared directory of a training mixture and its share of the sequences (data.sources).
struct DataSource {
  std::string dir;
  double weight = 1;
  bool operator==(const DataSource&) const = default;
};

struct DataConfig {
  std::string corpus = "/usr/share/games/fortunes";
  std::string dir = "runs/data/fortunes";
  double val_fraction = 0.05;
  std::string tokenizer;                  // reuse this tokenizer.model in moe data prepare ("" = train one)
  std::int64_t tokenizer_sample_mb = 64;  // a trained tokenizer's sample of the training documents
  std::int64_t sort_mb = 16;              // moe data prepare: keys a deduplication sorter holds before spilling
  data::FilterOptions filters;            // moe data prepare's quality filters (keys data.dedup, data.min_words, ...)
  data::ChatTemplate chat;                // chat data (.jsonl corpora): keys data.chat_template, data.loss_on
  data::DocumentMask document_mask = data::DocumentMask::automatic;  // data/loader.h's Masking::documents
  // A mixture (data/loader.h): training sequences drawn from these prepared directories in
  // proportion to their weights; data.dir is one of them (its tokenizer and validation split
  // are the run's). Empty: data.dir alone.
  std::vector<DataSource> sources;
};

struct ParallelConfig {
  std::int64_t dp = 0;  // 0 = world / (tp * pp)
  std::int64_t tp = 1;
  std::int64_t pp = 1;
  std::vector<std::int64_t> pp_layers;  // blocks per virtual stage (empty: balanced by plan/stages.h)
  std::int64_t virtual_stages = 1;      // model chunks per pipeline stage (interleaved 1F1B when > 1)
  PipeSchedule schedule = PipeSchedule::one_f_one_b;
  bool split_weight_grads = true;  // dualpipev: weight gradients in `weights` units (off: whole backwards)
  // Model chunks on each stage: virtual_stages, or DualPipeV's two.
  std::int64_t chunks() const { return schedule == PipeSchedule::dualpipev ? 2 : virtual_stages; }
  std::int64_t ep = 1;
  std::int64_t zero = 0;
  double bucket_mb = 25.0;          // gradient all-reduce bucket
  std::int64_t ranks_per_node = 0;  // 0: the launcher's (ranks sharing this one's memory)
  DispatchKind dispatch = DispatchKind::hierarchical;
  bool overlap = true;                 // the expert dispatch's payload travels while the shared experts compute
  std::int64_t redundant_experts = 0;  // replica slots per ep rank (model/replicas.h)
  std::int64_t rebalance_every = 50;   // steps between replica choices
  bool node_reduced_combine = false;   // hierarchical bf16/fp8: the way back summed in the node (model/dispatch.h)
};

struct CheckpointConfig {
  std::string dir;         // "" = no checkpoints
  std::int64_t every = 0;  // 0 = only at the end
  std::int64_t keep = 3;
  bool resume = true;     // continue from dir/latest when there is one
  bool async = false;     // chunk writes behind the next steps (checkpoint/checkpoint.h PendingWrite)
  std::string init_from;  // fine-tuning: weights from this checkpoint, fresh optimizer ("" = none)
  // Tensors of the checkpoint loaded (resumed or init_from) that the model may leave out:
  // name patterns (fnmatch, e.g. 'weights/model.layers.61.*'). Any other tensor the model
  // does not have is an error: a smaller model would silently drop it from the next save.
  std::vector<std::string> drop;
};

// Fault injection, for tests and drills of the fault handling (docs/CLUSTER.md).
struct DebugConfig {
  std::int64_t nan_at_step = 0;  // this step (1-based) and the next nan_steps - 1 get a NaN gradient (0: never)
  std::int64_t nan_steps = 1;
  std::int64_t hang_at_step = 0;  // rank hang_rank stops making progress at this step (0: never)
  std::int64_t hang_rank = 0;
  bool collapse_routing = false;        // every router's bias makes expert 0 every token's choice
  double link_delay_ms = 0;             // every expert all-to-all completes no sooner than this after it started
  std::int64_t slow_checkpoint_ms = 0;  // checkpoint.async: the writer waits this long before writing
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
  DebugConfig debug;

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

std::string config_to_yaml(const Config& c);  // the resolved config, every key
// Every key with its value as YAML scalar text, in registry order.
std::vector<std::pair<std::string, std::string>> config_values(const Config& c);
std::string config_reference_markdown();  // the README's table of keys
std::vector<std::string> config_keys();   // all dotted keys, in order

}  // namespace moe
