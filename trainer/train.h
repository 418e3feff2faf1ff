// `moe train`: the training loop over the MoE transformer, data parallel over MPI.
#pragma once
#include <vector>

#include "parallel/communicator.h"
#include "trainer/config.h"

namespace moe {

struct TrainResult {
  std::int64_t steps = 0;
  double tokens = 0;                // training tokens over all ranks
  std::vector<double> losses;       // training loss (CE + balance loss) per step
  double val_loss = 0;              // last validation pass, mean token cross-entropy
  double unigram_entropy = 0;       // of the training split, from the prepared data (0 if unknown)
  double wall_seconds = 0;
};

// Learning rate at 0-based `step`: linear warm-up, then the configured schedule.
double learning_rate(const TrainConfig& t, std::int64_t step);

TrainResult train(const Config& cfg, Communicator& world);

}  // namespace moe
