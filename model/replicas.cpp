#include "model/replicas.h"

#include <algorithm>
#include <numeric>

#include "kernels/ops.h"

namespace moe {

namespace {
// One row per expert: a projection (El,...) as (El, numel/El).
Tensor by_expert(const Tensor& w) { return w.view({w.size(0), w.numel() / w.size(0)}); }
// Row indices as the i32 tensor the row ops take, on device d.
Tensor indices(const std::vector<std::int64_t>& v, Device d) {
  Tensor t = Tensor::empty({std::int64_t(v.size())}, DType::i32);
  std::transform(v.begin(), v.end(), t.data<std::int32_t>(), [](std::int64_t i) { return std::int32_t(i); });
  return t.to(d);
}
}  // namespace

ReplicaLayout replica_layout(const ModelConfig& c, const ExpertGroup& g) {
  const std::int64_t P = g.ep ? g.ep->size() : 1;
  return {.experts = c.routed_experts,
          .ranks = P,
          .local = c.routed_experts / P,
          .slots = g.redundant,
          .ranks_per_node = g.hierarchical() ? g.node->size() : P};
}

std::vector<std::int32_t> choose_replicas(const ReplicaLayout& l, const std::vector<double>& load) {
  const std::int64_t E = l.experts, P = l.ranks, R = l.slots, node = std::clamp<std::int64_t>(l.ranks_per_node, 1, P);
  MOE_CHECK(static_cast<std::int64_t>(load.size()) == E, ShapeError, "choose_replicas: {} loads for {} experts",
            load.size(), E);
  std::vector<std::int32_t> slot_expert(std::size_t(P * R), -1);
  std::vector<std::int64_t> copies(std::size_t(E), 1), used(std::size_t(P), 0);
  auto share = [&](std::int64_t e) { return load[std::size_t(e)] / double(copies[std::size_t(e)]); };
  auto holds = [&](std::int64_t j, std::int64_t e) {
    const auto* s = slot_expert.data() + j * R;
    return l.owner(e) == j || std::find(s, s + R, e) != s + R;
  };
  auto rank_rows = [&](std::int64_t j) {  // its experts' and replicas' shares as they stand
    double rows = 0;
    for (std::int64_t e = j * l.local; e < (j + 1) * l.local; ++e) rows += share(e);
    for (std::int64_t r = 0; r < used[std::size_t(j)]; ++r) rows += share(slot_expert[std::size_t(j * R + r)]);
    return rows;
  };
  // The least loaded rank of e's node with a free slot and no instance of e (-1: none).
  auto place = [&](std::int64_t e) {
    std::int64_t best = -1;
    for (std::int64_t j = l.owner(e) / node * node; j < (l.owner(e) / node + 1) * node; ++j)
      if (used[std::size_t(j)] < R && !holds(j, e) && (best < 0 || rank_rows(j) < rank_rows(best))) best = j;
    return best;
  };
  for (std::int64_t n = 0; n < P * R; ++n) {
    std::int64_t e_best = -1, j_best = -1;
    for (std::int64_t e = 0; e < E; ++e) {
      if (load[std::size_t(e)] <= 0 || (e_best >= 0 && share(e) <= share(e_best))) continue;
      if (const std::int64_t j = place(e); j >= 0) e_best = e, j_best = j;
    }
    if (e_best < 0) break;  // no expert with rows has a rank left to go to
    slot_expert[std::size_t(j_best * R + used[std::size_t(j_best)]++)] = static_cast<std::int32_t>(e_best);
    ++copies[std::size_t(e_best)];
  }
  return slot_expert;
}

Tensor instance_table(const ReplicaLayout& l, const std::vector<std::int32_t>& slot_expert) {
  const std::int64_t E = l.experts;
  std::vector<std::vector<std::int32_t>> of(static_cast<std::size_t>(E));
  for (std::int64_t e = 0; e < E; ++e) of[std::size_t(e)].push_back(static_cast<std::int32_t>(l.owner_instance(e)));
  for (std::size_t s = 0; s < slot_expert.size(); ++s)
    if (slot_expert[s] >= 0)
      of[std::size_t(slot_expert[s])].push_back(static_cast<std::int32_t>(l.slot_instance(std::int64_t(s))));
  std::vector<std::int32_t> t(std::size_t(E) + 1, 0);
  for (std::int64_t e = 0; e < E; ++e)
    t[std::size_t(e) + 1] = t[std::size_t(e)] + std::int32_t(of[std::size_t(e)].size());
  for (const auto& list : of) t.insert(t.end(), list.begin(), list.end());
  Tensor out = Tensor::empty({std::int64_t(t.size())}, DType::i32);
  std::copy(t.begin(), t.end(), out.data<std::int32_t>());
  return out;
}

ExpertReplicas::ExpertReplicas(const ReplicaLayout& l, Communicator* ep)
    : l_(l), ep_(ep && ep->size() > 1 ? ep : nullptr), rank_(ep_ ? ep_->rank() : 0) {
  MOE_CHECK(l.slots > 0 && l.local > 0 && l.experts == l.ranks * l.local, ConfigError,
            "redundant experts: {} slots a rank for {} experts over {} ranks", l.slots, l.experts, l.ranks);
  assign(std::vector<std::int32_t>(std::size_t(l.ranks * l.slots), -1), Device::cpu);
}

void ExpertReplicas::assign(std::vector<std::int32_t> slot_expert, Device d) {
  slot_expert_ = std::move(slot_expert);
  table_ = instance_table(l_, slot_expert_).to(d);
}

std::vector<std::int64_t> ExpertReplicas::slots_between(std::int64_t from, std::int64_t to) const {
  std::vector<std::int64_t> out;
  for (std::int64_t r = 0; r < l_.slots; ++r)
    if (const std::int32_t e = slot_expert_[std::size_t(to * l_.slots + r)]; e >= 0 && l_.owner(e) == from)
      out.push_back(to * l_.slots + r);
  return out;
}

// Owners send (refresh): a row per (this rank's expert, slot of j replicating it) to j; the
// received rows land in this rank's slots. Else (fold) the same pairs the other way.
ExpertReplicas::Exchange ExpertReplicas::exchange(bool owners_send) const {
  const auto P = static_cast<std::size_t>(l_.ranks);
  Exchange x{std::vector<std::int64_t>(P, 0), std::vector<std::int64_t>(P, 0), {}, {}};
  for (std::size_t j = 0; j < P; ++j) {
    // An (owner, replica) pair between this rank and j: this rank sends its side of it when
    // it is the side that sends (owners_send: the owner), else receives into it; its side is
    // the owned expert's row, or the replica slot.
    auto pair = [&](std::int64_t owned_row, std::int64_t slot, bool owns) {
      const std::int64_t local = owns ? owned_row : slot;
      if (owns == owners_send) x.read.push_back(local), ++x.send[j];
      else x.write.push_back(local), ++x.recv[j];
    };
    for (std::int64_t s : slots_between(rank_, std::int64_t(j)))  // j's slots holding experts of this rank
      pair(slot_expert_[std::size_t(s)] % l_.local, s % l_.slots, true);
    for (std::int64_t s : slots_between(std::int64_t(j), rank_))  // this rank's slots holding j's experts
      pair(slot_expert_[std::size_t(s)] % l_.local, s % l_.slots, false);
  }
  return x;
}

void ExpertReplicas::move(const Exchange& x, const Tensor& from, Tensor& to, bool accumulate) const {
  const Device d = from.device();
  Tensor out = Tensor::empty({std::int64_t(x.read.size()), from.size(1)}, DType::f32, d),
         in = Tensor::empty({std::int64_t(x.write.size()), from.size(1)}, DType::f32, d);
  ops::gather_rows(out, from, indices(x.read, d));
  if (ep_) ep_->all_to_all_v(in, x.recv, out, x.send);
  else in.copy_from(out);
  // Row r of `to` takes the received rows written to it, in arrival order (rank, then slot).
  std::vector<std::vector<std::int64_t>> into(std::size_t(to.size(0)));
  for (std::size_t k = 0; k < x.write.size(); ++k) into[std::size_t(x.write[k])].push_back(std::int64_t(k));
  std::size_t W = 1;
  for (const auto& terms : into) W = std::max(W, terms.size());
  std::vector<std::int64_t> slots(into.size() * W, -1);
  for (std::size_t r = 0; r < into.size(); ++r) std::copy(into[r].begin(), into[r].end(), slots.begin() + r * W);
  const Tensor terms = indices(slots, d).view({to.size(0), std::int64_t(W)});
  ops::combine_rows(to, in, terms, Tensor(), accumulate);
}

bool ExpertReplicas::idle() const {
  return std::all_of(slot_expert_.begin(), slot_expert_.end(), [](std::int32_t e) { return e < 0; });
}

void ExpertReplicas::refresh(const ParamList& owned, std::vector<Tensor>& replica) {
  if (idle()) return;  // (the same table on every rank: all skip)
  const Exchange x = exchange(/*owners_send=*/true);
  for (std::size_t i = 0; i < owned.size(); ++i) {
    Tensor dst = by_expert(replica[i]);
    move(x, by_expert(owned[i]->w), dst, /*accumulate=*/false);  // (an empty slot reads zeros)
  }
}

void ExpertReplicas::fold(const ParamList& owned, std::vector<Tensor>& replica_grad) {
  if (idle()) return;
  const Exchange x = exchange(/*owners_send=*/false);
  for (std::size_t i = 0; i < owned.size(); ++i) {
    if (!owned[i]->g.defined()) continue;  // frozen
    Tensor g = by_expert(owned[i]->g);
    move(x, by_expert(replica_grad[i]), g, /*accumulate=*/true);  // in rank order, then slot order: a fixed sum
    replica_grad[i].zero();
  }
}

}  // namespace moe
