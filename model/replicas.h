// Redundant experts (DeepSeek-V3's EPLB): R extra expert slots on each of the P ranks of an
// expert-parallel group, each holding a replica of a heavily loaded expert, so the rows of a
// hot expert split between its owner and its replicas.
//
// Instances, rank-major: rank j's slots are instances j*(El+R) + s, slot s < El its own expert
// j*El + s, slot s >= El replica slot s - El. The router still chooses experts; each kept
// assignment then goes to one instance of its expert (ops::pick_instances), and the dispatch
// sends rows to instances as it did to experts. A replica's weights are a copy of its owner's
// (refreshed after every optimizer step and every re-selection), and its weight gradient is
// added to the owner's before the gradients are reduced over edp, so training equals the run
// without replicas up to the order of the sums; replicas are not parameters, and checkpoints
// do not see them.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/expert_group.h"
#include "config/model_config.h"
#include "model/param.h"

namespace moe {

struct ReplicaLayout {
  std::int64_t experts = 0, ranks = 1, local = 0, slots = 0;  // E, P, El, R
  // Consecutive ranks sharing a node: a replica stays on its expert's node, so node-limited
  // routing reaches the nodes it chose (DeepSeek's hierarchical policy). ranks: anywhere.
  std::int64_t ranks_per_node = 1;
  std::int64_t instances() const { return ranks * (local + slots); }
  std::int64_t owner(std::int64_t e) const { return e / local; }
  std::int64_t owner_instance(std::int64_t e) const { return owner(e) * (local + slots) + e % local; }
  std::int64_t slot_instance(std::int64_t slot) const { return slot / slots * (local + slots) + local + slot % slots; }
};

// The layout of group g's replica slots (g.redundant a rank) for model c.
ReplicaLayout replica_layout(const ModelConfig& c, const ExpertGroup& g);

// The expert each of the P*R replica slots holds (-1: empty), from the experts' loads (the same
// on every rank, so every rank chooses the same). Greedy, as EPLB: each replica in turn goes
// to the expert whose instances carry the most rows each (its load over its instances) among
// those with a rank left on their node (a free slot, no instance of it), on the least loaded
// such rank (rows as the experts' shares stand).
std::vector<std::int32_t> choose_replicas(const ReplicaLayout& l, const std::vector<double>& load);

// ops::pick_instances's table (host i32): per expert, its owner's instance and then its
// replicas' in slot order.
Tensor instance_table(const ReplicaLayout& l, const std::vector<std::int32_t>& slot_expert);

// The replica slots of one MoE layer on this rank and their exchanges with the owners over the
// ep group. The projections are the owner's Params (El,...) and the replicas' tensors (R,...),
// each expert one row of numel/El.
class ExpertReplicas {
 public:
  ExpertReplicas(const ReplicaLayout& l, Communicator* ep);
  const ReplicaLayout& layout() const { return l_; }
  // New slot assignment (choose_replicas'); the table on device d. Weights: refresh() after.
  void assign(std::vector<std::int32_t> slot_expert, Device d);
  const std::vector<std::int32_t>& slot_expert() const { return slot_expert_; }
  // The table on device d (moved there once).
  const Tensor& table(Device d) {
    if (table_.device() != d) table_ = table_.to(d);
    return table_;
  }
  // Every replica's weights from its owner's (replica[i] (R,...) from owned[i]->w (El,...)).
  void refresh(const ParamList& owned, std::vector<Tensor>& replica);
  // Every replica's gradient added to its owner's (owned[i]->g += the sum over the ranks
  // holding a replica, in rank and slot order) and zeroed.
  void fold(const ParamList& owned, std::vector<Tensor>& replica_grad);

 private:
  // Rank `to`'s replica slots (global slot ids) holding experts rank `from` owns, in slot order.
  std::vector<std::int64_t> slots_between(std::int64_t from, std::int64_t to) const;
  // One exchange between owners and replica slots: rows sent to and received from each rank,
  // the local row each sent row is read from and each received row lands in (or adds to).
  struct Exchange {
    std::vector<std::int64_t> send, recv, read, write;
  };
  Exchange exchange(bool owners_send) const;
  bool idle() const;  // every slot empty
  // from's rows x.read (ops::gather_rows), exchanged, and into `to`'s rows x.write
  // (ops::combine_rows): assigned (a row written by nothing: zeros), or with accumulate added
  // to it in arrival order.
  void move(const Exchange& x, const Tensor& from, Tensor& to, bool accumulate) const;

  ReplicaLayout l_;
  Communicator* ep_;  // null: one rank
  int rank_ = 0;
  std::vector<std::int32_t> slot_expert_;
  Tensor table_;
};

}  // namespace moe
