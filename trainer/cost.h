// What a run costs (docs/COST.md): the cluster it is priced on (configs/clusters/NAME.yaml),
// the model FLOPs per token, and the report printed at the end of every run and written as
// cost.json beside the checkpoints. Counters accumulate across resumes (they live in the
// checkpoint).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "plan/cluster.h"
#include "plan/counts.h"
#include "config/config.h"

namespace moe {

// local-cpu: one rank's f32 GEMM rate (1024^3, best of 3) becomes the peak; the all-reduce
// bus bandwidth over `world` (16 MiB, best of 3; on one rank, a 16 MiB copy's) the
// interconnect; a 16 MiB copy's read + write rate the memory bandwidth. Collective.
void calibrate(Cluster& c, Communicator& world);

// Device-hours by where the time went, and what was done, over every launch of a run.
struct CostCounters {
  double compute = 0, communication = 0, evaluation = 0, checkpoint = 0;  // device-hours
  double pipeline_idle = 0;                         // device-hours waiting on pipeline neighbours (0 while pp = 1)
  double tokens = 0, flops = 0, train_seconds = 0;  // train_seconds: wall, excluding eval and checkpoints
  double device_hours() const { return compute + communication + evaluation + checkpoint + pipeline_idle; }
  CostCounters& operator+=(const CostCounters& o);
};

// The report: text for the end of the run, JSON for cost.json.
nlohmann::json cost_json(const Cluster& c, const CostCounters& k, const Config& cfg, int world);
std::string cost_text(const nlohmann::json& report);

}  // namespace moe
