// What a checkpoint records of its run besides the tensors, as the attributes of ckpt::Meta:
// one table (for_each_field in run_meta.cpp) that saving and loading both walk, so a field
// added here is written and read back without a second list to keep in step.
#pragma once
#include <cstdint>
#include <string>

#include "checkpoint/checkpoint.h"
#include "trainer/cost.h"

namespace moe {

struct RunMeta {
  std::int64_t step = 0;    // optimizer steps done; the data position and schedule follow from it
  std::uint64_t seed = 0;   // batches are a function of (seed, step); init draws from it too
  std::string config_yaml;  // the resolved config that wrote it
  std::string layout;       // e.g. "world 4: pp 1 x dp 4 x tp 1, ep 2, zero 1"
  double global_batch = 0;  // sequences per optimizer step (dp x grad_accum x micro_batch); 0: unknown
  double wall_seconds = 0;  // training wall time so far
  double device_hours = 0;  // ranks x wall time so far
  double last_loss = 0;     // training loss of the last step
  double val_loss = 0;      // validation loss with the saved weights (0: not evaluated)
  CostCounters cost;        // summed over launches; cost.tokens: training tokens so far
  std::string tokenizer;    // data::tokenizer_digest of the data.dir it trained on ("": none, or older)
  std::string replicas;     // redundant experts: the trainer's choice and loads since, JSON ("": none)

  ckpt::Meta to_meta() const;
  // CheckpointError naming the file and the attribute where one that every checkpoint has is
  // missing; fields added since format version 1 was first written read 0 when absent.
  static RunMeta from(const ckpt::Meta& meta);
};

inline RunMeta read_run_meta(const std::string& path) { return RunMeta::from(ckpt::read_meta(path)); }

}  // namespace moe
