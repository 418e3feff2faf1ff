// What a run records per step beside its checkpoints (one rank writes): metrics.jsonl, one
// JSON object per step, and TensorBoard event files under tb/ (scalars for every number of
// the object, a histogram of expert loads). A resumed run first drops the lines of the steps
// after its checkpoint (they run again), so the file reads as one uninterrupted run.
#pragma once
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "trainer/tensorboard.h"

namespace moe {

class Metrics {
 public:
  Metrics() = default;  // records nothing
  Metrics(const std::string& dir, std::int64_t resume_step);
  bool enabled() const { return jsonl_.is_open(); }
  // `record` holds "step"; numbers become TensorBoard scalars under their key (objects one
  // level deep as key/inner), "expert_loads" (per MoE layer, per expert) a histogram.
  void log(const nlohmann::json& record);
  std::string jsonl_path() const { return path_; }

 private:
  std::string path_;
  std::ofstream jsonl_;
  std::unique_ptr<EventWriter> tb_;
};

}  // namespace moe
