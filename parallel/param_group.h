// The parameters whose gradients are summed over one group of ranks, and their optimizer
// (data parallelism and ZeRO-1). Weights and gradients each live in one flat buffer (every
// Param::w and Param::g becomes a view into it), padded to a multiple of the group size so
// that each rank can own an equal shard.
//   zero 0: gradients all-reduced in buckets of about bucket_bytes; every rank keeps all the
//           AdamW moments and updates every weight.
//   zero 1: gradients reduce-scattered (rank r receives the sum of shard r); AdamW runs on
//           the shard with moments for the shard alone (optimizer memory 1/p); the updated
//           shards are all-gathered so every rank holds every weight again.
// The trainer keeps two groups: non-expert parameters over dp, routed experts over edp; and
// two frozen ones (train.freeze, a LoRA's base weights) that hold weights alone: no gradient
// (Param::g undefined, so backward skips their weight-gradient GEMMs), no AdamW moments.
#pragma once
#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "model/param.h"
#include "comm/communicator.h"

namespace moe {

class ParamGroup {
 public:
  enum class Role { trained, frozen };
  ParamGroup(const ParamList& params, Communicator& comm, int zero, std::size_t bucket_bytes,
             Role role = Role::trained);
  bool trained() const { return role_ == Role::trained; }
  void zero_grad() {
    if (trained()) grads_.zero();
  }
  // Sum the gradients over the group (zero 0: all of them; zero 1: this rank's shard).
  void reduce_grads();
  // Squared norm of the summed gradient of the whole group, the same on every rank of it
  // (zero 1 adds the shards' norms with one scalar all-reduce). Call after reduce_grads.
  // weight(param) scales a parameter's share (a tensor replicated over tp ranks counts 1/tp
  // on each, so a sum over them counts it once).
  double grad_sq_norm(const std::function<double(const Param&)>& weight = {});
  void scale_grads(double s);
  // One AdamW step with spec's lr/betas/eps/step; weight_decay applies where Param::decay.
  void step(const ops::AdamWSpec& spec, double weight_decay);

  std::int64_t numel() const { return numel_; }                              // parameters, without padding
  std::size_t optimizer_bytes() const { return m_.nbytes() + v_.nbytes(); }  // moments held here
  std::int64_t buckets() const;
  Tensor& flat_grads() { return grads_; }  // every gradient, contiguous (padding zero); frozen: undefined

  // Where each parameter lives in the flat buffers (checkpoints describe their slices by it).
  struct Span {
    Param* param;
    std::int64_t begin, size;
  };
  const std::vector<Span>& spans() const { return spans_; }
  Tensor& weights() { return weights_; }
  Tensor& exp_avg() { return m_; }
  Tensor& exp_avg_sq() { return v_; }
  // A moment over the whole group, flat (collective at zero 1: the shards all-gathered).
  Tensor gather_moment(const Tensor& moment);
  std::int64_t moments_begin() const { return zero_ == 1 ? comm_.rank() * shard_ : 0; }  // flat index of exp_avg()[0]
  // The flat range this rank writes to a checkpoint: its 1/p of the group (also at zero 0,
  // so the writing is spread over the ranks).
  std::int64_t write_begin() const { return std::min(numel_, comm_.rank() * shard_); }
  std::int64_t write_end() const { return std::min(numel_, (comm_.rank() + 1) * shard_); }

 private:
  Communicator& comm_;
  int zero_;
  Role role_;
  std::int64_t numel_ = 0, shard_ = 0, bucket_;  // shard_: elements per rank (zero 1)
  std::vector<Span> spans_;
  Tensor weights_, grads_, shard_grads_, m_, v_;
};

}  // namespace moe
