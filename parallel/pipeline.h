// The 1F1B pipeline schedule (PipeDream-Flush, as Megatron-LM runs it) of one stage.
//
// Stage s of p runs m micro-batches: w = min(p-1-s, m) forwards to fill the pipe, then
// alternates one forward and one backward, then drains the last w backwards. Activations go
// to stage s+1 and gradients come back to s-1 by point-to-point messages on the pipeline
// communicator; where a stage hands one on while waiting for the other, the two travel in
// one send_recv, so neighbours never wait on each other's blocking send. A stage holds at
// most w+1 micro-batches in flight. With p = 1 it is forward, backward, forward, ...
//
// The schedule knows nothing of the model: the callbacks run one micro-batch through the
// stage. The idle time (waiting in the pp communicator) over the step is the bubble,
// (p-1)/(m+p-1) when stages take equal time. A DualPipe-style schedule would be another
// function over the same two callbacks, pairing one micro-batch's forward with another's
// backward so that the expert all-to-all of one hides behind the compute of the other.
#pragma once
#include <cstdint>
#include <functional>

#include "kernels/tensor.h"
#include "parallel/communicator.h"

namespace moe {

struct StageWork {
  // Micro-batch i forward: `in` is the previous stage's output (undefined on the first
  // stage); returns this stage's output (ignored on the last).
  std::function<Tensor(std::int64_t i, const Tensor& in)> forward;
  // Micro-batch i backward: `dout` is the gradient of its output (undefined on the last
  // stage); returns the gradient of its input (ignored on the first).
  std::function<Tensor(std::int64_t i, const Tensor& dout)> backward;
  Shape activation;  // what flows between stages, e.g. (B*T, C) f32
};

// Runs the step's m micro-batches on this stage. pp: the pipeline communicator (rank =
// stage); fresh receive buffers per message, so callbacks may keep what they are given.
void run_1f1b(Communicator& pp, std::int64_t m, const StageWork& work);

// Forward only, micro-batch after micro-batch (evaluation).
void run_forward(Communicator& pp, std::int64_t m, const StageWork& work);

// The ideal bubble of 1F1B with equal stages.
inline double bubble_fraction(std::int64_t p, std::int64_t m) { return double(p - 1) / double(m + p - 1); }

}  // namespace moe
