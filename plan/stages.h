// Which blocks each pipeline stage holds: the config's parallel.pp_layers, or contiguous
// runs that balance the estimated training FLOPs per token (a block's GEMMs and attention
// core; the LM head counts on the last stage, the embedding lookup on the first is free),
// every stage holding at least one block. The trainer and the planner use the same split.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/pipeline.h"
#include "config/config.h"

namespace moe {

// pp + 1 boundaries: stage s holds blocks [bounds[s], bounds[s+1]).
std::vector<std::int64_t> stage_bounds(const Config& cfg, int pp);

// Where the virtual stages sit on the pp stages (parallel.schedule, parallel.virtual_stages).
inline PipeShape pipe_shape(const Config& cfg) {
  const bool v = cfg.parallel.schedule == PipeSchedule::dualpipev;
  return {static_cast<int>(cfg.parallel.pp), static_cast<int>(cfg.parallel.chunks()), v};
}
// The schedule stage s runs for m micro-batches.
inline std::vector<PipeUnit> stage_schedule(const Config& cfg, int s, std::int64_t m) {
  const PipeShape shape = pipe_shape(cfg);
  return shape.v ? schedule_dualpipev(shape.stages, s, m) : schedule_1f1b(shape.stages, s, m, shape.chunks);
}

// Estimated training FLOPs per token of block `layer`, and of the LM head.
double block_cost(const ModelConfig& m, std::int64_t layer);
double head_cost(const ModelConfig& m);

}  // namespace moe
