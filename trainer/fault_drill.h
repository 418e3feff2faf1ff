// Fault drills (the config's debug.* keys): faults injected on purpose, so that tests prove
// the run survives them. The loop calls one hook at each point a drill may strike; nothing
// happens unless a debug key asks for it.
#pragma once
#include <cstdint>

#include "config/config.h"
#include "kernels/tensor.h"

namespace moe {

class FaultDrills {
 public:
  FaultDrills(const DebugConfig& debug, int world_rank) : d_(debug), rank_(world_rank) {}
  enum class Point {
    step_start,        // a step begins: debug.hang_at_step stops rank hang_rank (the watchdog must end the job)
    gradients_summed,  // before the data-parallel reduction: debug.nan_at_step puts a NaN in rank 0's
                       // `target` gradient (one rank's NaN must reach every rank, and the step be skipped)
    router_bias,       // a step begins: debug.collapse_routing sets expert 0's `target` bias far above the
                       // scores (the memory guard, model.capacity_factor, must hold what follows)
  };
  // At `point` of 0-based `step`, on `target` where the point names one.
  void strike(Point point, std::int64_t step, Tensor* target = nullptr) const;

 private:
  const DebugConfig& d_;
  int rank_;
};

}  // namespace moe
