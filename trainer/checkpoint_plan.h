// What this rank writes to and reads from a checkpoint (checkpoint/checkpoint.h), described
// from the optimizer groups: the datasets of the whole model (same list on every rank) and
// this rank's slices of them.
//   write: each rank of a group writes its 1/p of the group's flat weights and moments
//          (its ZeRO-1 shard; at zero 0 the same split spreads the I/O); of the tensors
//          every tp rank holds whole, the tp lead's share only; one rank per pipeline stage
//          the router biases.
//   read:  every rank reads all the weights it holds (its experts under ep, its tp shards)
//          and the router biases, and the moments it keeps (all at zero 0, its shard at zero 1).
// Routed experts map to one dataset per expert under its global index, so the file never
// depends on ep; a tp shard is a window of its full tensor (ckpt::Slice), so it never
// depends on tp; a stage lists its own datasets, and the trainer joins the stages' lists.
#pragma once
#include <vector>

#include "checkpoint/slices.h"
#include "model/transformer.h"
#include "parallel/param_group.h"

namespace moe {

struct CheckpointPlan {
  std::vector<ckpt::Dataset> datasets;
  std::vector<ckpt::Slice> slices;
  // A model on the GPU: the slices point into host copies of its buffers, made with the plan
  // (what a write saves); after a read, copy_back() puts what was read on the device.
  std::vector<std::pair<Tensor, Tensor>> staged;  // (device buffer, its host copy)
  void copy_back();
};

enum class CheckpointPart { all, weights };  // weights: weights and router biases (fine-tuning)

CheckpointPlan plan_write(const std::vector<ParamGroup*>& groups, Transformer& model, bool tp_lead, bool write_buffers);
CheckpointPlan plan_read(const std::vector<ParamGroup*>& groups, Transformer& model, CheckpointPart part);

}  // namespace moe
