// The walking skeleton of `moe train`, until the MoE transformer lands (model issue):
// a byte-level language model (embedding -> RMSNorm -> SwiGLU FFN with residual -> RMSNorm
// -> LM head -> cross-entropy) trained data-parallel over MPI with AdamW. It runs the real
// op library, the real config, the real corpus and the real communicator end to end.
#pragma once
#include "parallel/communicator.h"
#include "trainer/config.h"

namespace moe {

struct RunSummary {
  std::int64_t steps = 0;
  double tokens = 0;          // training tokens over all ranks
  double first_loss = 0, last_loss = 0, val_loss = 0;
  double wall_seconds = 0;
};

RunSummary train_skeleton(const Config& cfg, Communicator& world);

}  // namespace moe
