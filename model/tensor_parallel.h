// Tensor parallelism (Megatron style) over a group of tp ranks that see the same tokens.
//   column-parallel: q, k, v, gate, up, embedding and LM head rows split (dim 0), the input
//     replicated; the backward's input gradient is a partial sum, all-reduced.
//   row-parallel: o and down split along their input (dim 1); the output is a partial sum,
//     all-reduced. So each block all-reduces twice in forward and twice in backward.
//   routed experts stay whole (expert tensor parallel 1): every tp rank routes all tokens the
//     same way, then dispatches only its 1/tp of them (MoE).
//   vocabulary-parallel loss: each rank holds V/tp logits; the softmax statistics are
//     combined over the group, so no rank ever holds the (N,V) logits.
#pragma once
#include <cstdint>
#include <utility>

#include "model/param.h"
#include "comm/communicator.h"

namespace moe {

struct TensorParallel {
  Communicator* comm = nullptr;  // null: tp = 1
  int rank = 0, size = 1;
  explicit TensorParallel(Communicator* c = nullptr)
      : comm(c && c->size() > 1 ? c : nullptr), rank(comm ? c->rank() : 0), size(comm ? c->size() : 1) {}
  bool on() const { return size > 1; }
  std::int64_t part(std::int64_t full) const { return full / size; }
  std::int64_t begin(std::int64_t full) const { return rank * (full / size); }
  // Sum over the group; nothing at tp 1.
  void all_reduce(Tensor& t) const {
    if (comm) comm->all_reduce_sum(t);
  }
  // Marks p (constructed at its shard's shape) as this rank's shard of `full` along dim.
  void split(Param& p, int dim, std::int64_t full) const;
  // Marks a whole tensor held by every rank of the group.
  void replicate(Param& p, bool partial_grad = false) const {
    p.tp_replicated = on(), p.tp_partial = on() && partial_grad;
  }
  // Rows [first, second) of N tokens this rank dispatches to the routed experts.
  std::pair<std::int64_t, std::int64_t> token_range(std::int64_t N) const {
    return {N * rank / size, N * (rank + 1) / size};
  }
};

// The block [begin, begin + count) along dim of `full`, as a new tensor; and the inverse.
Tensor take_shard(const Tensor& full, int dim, std::int64_t begin, std::int64_t count);
void put_shard(Tensor& full, const Tensor& shard, int dim, std::int64_t begin);

// Cross-entropy over logits split along the vocabulary: this rank's logits (N, V/tp) are
// vocabulary [v0, v0 + V/tp). losses (N) = lse - logit[target] on every rank (targets -1:
// 0); lse (N) saved for backward. Two collectives: the row maxima gathered, then the sums
// of exponentials and the target logits all-reduced together.
void vocab_parallel_ce_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets,
                               std::int64_t v0, const TensorParallel& tp);
// dlogits (N, V/tp) = (softmax - onehot) * dlosses (assign); no communication.
void vocab_parallel_ce_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& lse,
                                const Tensor& targets, std::int64_t v0);

}  // namespace moe
