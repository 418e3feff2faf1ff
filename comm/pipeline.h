// Pipeline schedules of one stage: 1F1B (PipeDream-Flush, as Megatron-LM runs it) and its
// interleaved form with v model chunks per stage (Megatron's virtual stages).
//
// With v chunks, stage s of p holds virtual stages s, p + s, ..., (v-1)p + s: a micro-batch
// goes through every stage's first chunk, then every stage's second, and so on. Stage s runs
// m micro-batches x v chunks as w = min((p-1-s)*2 + (v-1)*p, m*v) forward units to fill the
// pipe (with v = 1: p-1-s), then alternates one forward and one backward unit, then drains
// the last w backwards; forward units go in groups of p micro-batches per chunk (Megatron's
// order, so m must be a multiple of p when v > 1). The bubble is (p-1)/(v*m + p-1) of the
// schedule when stages take equal time, v times smaller than 1F1B's, for v times the
// point-to-point messages and more micro-batches' activations held.
//
// Activations go to the next virtual stage and gradients back by point-to-point messages on
// the pipeline communicator: a unit waits to receive its input, and hands its output on
// without waiting (post_send), so neighbours never wait on each other's send. Messages
// between two stages arrive in the order both run their units, so no tags per micro-batch.
//
// The schedule knows nothing of the model: the callbacks run one micro-batch through one
// chunk. A DualPipe-style schedule would be another unit order (and a callback pairing one
// micro-batch's forward with another's backward, so one's expert all-to-all hides behind
// the other's compute).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/tensor.h"
#include "comm/communicator.h"

namespace moe {

struct StageWork {
  // Micro-batch i forward through chunk c: `in` is the previous virtual stage's output
  // (undefined on virtual stage 0); returns this chunk's output (ignored on the last).
  std::function<Tensor(std::int64_t i, int chunk, const Tensor& in)> forward;
  // Micro-batch i backward through chunk c: `dout` is the gradient of its output (undefined
  // on the last virtual stage); returns the gradient of its input (ignored on the first).
  std::function<Tensor(std::int64_t i, int chunk, const Tensor& dout)> backward;
  Shape activation;  // what flows between stages, e.g. (B*T, C) f32
};

struct PipeUnit {
  bool forward;
  std::int64_t micro_batch;
  int chunk;
};

// The order stage s of p runs m micro-batches through its v chunks (1F1B; interleaved when
// v > 1). Throws ConfigError when v > 1 and p does not divide m.
std::vector<PipeUnit> schedule_1f1b(int p, int s, std::int64_t m, int v = 1);
// Forward only (evaluation): every micro-batch through chunk 0, then chunk 1, ...
std::vector<PipeUnit> schedule_forward(std::int64_t m, int v = 1);

// Runs `units` on this stage. pp: the pipeline communicator (rank = stage); fresh receive
// buffers per message, so callbacks may keep what they are given.
void run_schedule(Communicator& pp, int v, const std::vector<PipeUnit>& units, const StageWork& work);

inline void run_1f1b(Communicator& pp, std::int64_t m, const StageWork& work, int v = 1) {
  run_schedule(pp, v, schedule_1f1b(pp.size(), pp.rank(), m, v), work);
}
inline void run_forward(Communicator& pp, std::int64_t m, const StageWork& work, int v = 1) {
  run_schedule(pp, v, schedule_forward(m, v), work);
}

// The ideal bubble with equal stages.
inline double bubble_fraction(std::int64_t p, std::int64_t m, std::int64_t v = 1) {
  return double(p - 1) / double(v * m + p - 1);
}

}  // namespace moe
