// Which blocks each pipeline stage holds: the config's parallel.pp_layers, or contiguous
// runs that balance the estimated training FLOPs per token (a block's GEMMs and attention
// core; the LM head counts on the last stage, the embedding lookup on the first is free),
// every stage holding at least one block. Under DualPipeV the sums balanced are the pp
// stages' (two chunks each), not the chunks'. The trainer and the planner use the same split.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/pipeline.h"
#include "config/config.h"

namespace moe {

// pp + 1 boundaries: stage s holds blocks [bounds[s], bounds[s+1]).
std::vector<std::int64_t> stage_bounds(const Config& cfg, int pp);

// Where the virtual stages sit on pp stages (parallel.schedule, parallel.virtual_stages).
inline PipeShape pipe_shape(const Config& cfg, int pp) {
  return {pp, static_cast<int>(cfg.parallel.chunks()), cfg.parallel.schedule == PipeSchedule::dualpipev};
}
// The schedule stage s of pp runs for m micro-batches.
inline std::vector<PipeUnit> stage_schedule(const Config& cfg, int pp, int s, std::int64_t m) {
  const PipeShape shape = pipe_shape(cfg, pp);
  return shape.v ? schedule_dualpipev(pp, s, m, cfg.parallel.split_weight_grads)
                 : schedule_1f1b(pp, s, m, shape.chunks);
}

// Estimated training FLOPs per token of block `layer`, and of the LM head.
double block_cost(const ModelConfig& m, std::int64_t layer);
double head_cost(const ModelConfig& m);

}  // namespace moe
