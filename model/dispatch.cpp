#include "model/dispatch.h"

namespace moe {
namespace {
DispatchHop first_hop(const ExpertGroup& g, std::int64_t experts, Gemm gemm, bool node_reduced) {
  if (g.hierarchical()) return DispatchHop(g.rail, experts, 1, gemm, node_reduced);  // a node per rank of the rail
  return DispatchHop(g.ep, experts, g.ranks_per_node > 0 ? g.ranks_per_node : (g.ep ? g.ep->size() : 1), gemm);
}
}  // namespace

Dispatcher::Dispatcher(const ExpertGroup& g, std::int64_t experts, Gemm gemm, std::int64_t instances)
    : E_(experts),
      I_(instances > 0 ? instances : experts),
      fp8_(gemm.precision() == Precision::fp8),
      node_reduced_(g.hierarchical() && g.node_reduced && gemm.bf16_wire()),
      first_(first_hop(g, I_, gemm, node_reduced_)) {
  if (!g.hierarchical()) return;
  node_ = g.node;
  second_.emplace(g.node, I_ / g.rail->size(), g.node->size(), gemm);
}

DispatchPlan Dispatcher::plan(const Tensor& kept, const PlanCounts& counts) {
  DispatchPlan p;
  Tensor received;
  p.first = first_.plan(kept, counts, second_ ? &received : nullptr);
  p.stats = p.first.stats;
  if (!second_) return p;
  p.second = plan_second(received);
  if (fp8_) split_segments(*p.second, p.first);
  if (first_.per_assignment()) {
    const std::int64_t Rb = p.first.back_slot.numel(), R1K = p.second->back_row.numel();
    p.glue = Tensor::empty({Rb, 1}, DType::i32, received.device());
    ops::gather_rows(p.glue, p.second->back_row.view({R1K, 1}), p.first.back_slot);
    p.glue = p.glue.view({Rb});
  }
  return p;
}

// The forwarder's rows are the second hop's tokens and their metadata its routing: every
// assignment in it was kept by the first hop's capacity, so load and kept are one count.
HopPlan Dispatcher::plan_second(const Tensor& received) {
  const std::int64_t E2 = first_.local_experts(), n = received.numel();
  const PlanCounts counts(E2, second_->ranks(), received.device());
  Tensor load = counts.routed().rows(0, 1).view({E2}), kept = counts.routed().rows(1, 1),
         places = Tensor::empty({n}, DType::i32, received.device());
  ops::counting_sort(places, load, received.view({n}), E2);
  kept.copy_from(counts.routed().rows(0, 1));
  return second_->plan(received, counts);
}

// Rows from source rank (node s, place f) reach an expert through the forwarder at place f of
// its node, after those of nodes before s: each forwarder tells the ranks of its node how many
// rows of each of their experts it received from each node.
void Dispatcher::split_segments(HopPlan& second, const HopPlan& first) {
  const std::int64_t F = second_->ranks(), S = first_.ranks(), El = second_->local_experts(),
                     E1 = first_.local_experts();
  Tensor mine = Tensor::empty({F * S * El}, DType::i32), theirs = Tensor::empty({F * S * El}, DType::i32);
  auto* m = mine.data<std::int32_t>();
  for (std::int64_t r = 0; r < F; ++r)
    for (std::int64_t s = 0; s < S; ++s)
      for (std::int64_t l = 0; l < El; ++l)
        m[(r * S + s) * El + l] = static_cast<std::int32_t>(first.kept_in[std::size_t(s * E1 + r * El + l)]);
  const std::vector<std::int64_t> each(std::size_t(F), S * El);
  if (F > 1) node_->all_to_all_v(theirs, each, mine, each);
  else theirs = mine;
  const std::int32_t* t = theirs.data<std::int32_t>();
  const std::vector<std::int64_t> counts(t, t + theirs.numel());
  second.segments = tile_segments(second.offsets, counts.data(), F * S);
}

GemmInput Dispatcher::finish_dispatch(PendingRows& r, const DispatchPlan& p) {
  GemmInput rows = first_.finish_deliver(r);
  if (second_) rows = second_->deliver(rows, *p.second);
  return last().group(rows, p.last());  // (Me,C)
}

ReceivedGates Dispatcher::dispatch_gates(const Tensor& gates, const DispatchPlan& p) {
  const Tensor g = first_.gates_in(gates, p.first);
  if (!second_) return {g, {}};
  return {second_->gates_in(g, *p.second), node_reduced_ ? g : Tensor()};
}

void Dispatcher::combine(Tensor& out, const Tensor& ye, const Tensor& gates, const ReceivedGates& gr,
                         const DispatchPlan& p) {
  bring_back(out, last().reduce_back(ye, gr.experts, p.last()), gates, gr.forwarders, p);
}

void Dispatcher::dispatch_backward(Tensor& dx, const Tensor& dxe, const DispatchPlan& p) {
  bring_back(dx, last().reduce_back(dxe, Tensor(), p.last()), Tensor(), Tensor(), p);
}

void Dispatcher::bring_back(Tensor& out, const Tensor& back, const Tensor& gates, const Tensor& forwarder_gates,
                            const DispatchPlan& p) {
  Tensor first_back = back;
  if (second_) {
    // At the forwarder: what its first-hop row sends back, as if its node's experts were its own:
    // each assignment's row passed on, or the row's sum over them (by row: gated at the
    // experts; node-reduced: gated here, the assignments having come back on their own).
    const Tensor got = second_->return_rows(back, *p.second);
    if (first_.per_assignment()) {
      first_back = Tensor::empty({p.glue.numel(), got.size(1)}, DType::f32, got.device());
      ops::gather_rows(first_back, got, p.glue);
    } else {
      first_back = Tensor::zeros({p.first.received, got.size(1)}, DType::f32, got.device());
      second_->accumulate(first_back, got, forwarder_gates, *p.second);
    }
  }
  first_.accumulate(out, first_.return_rows(first_back, p.first), gates, p.first);
}

void Dispatcher::finish_combine_backward(PendingRows& r, Tensor& dye, Tensor& dgates, const Tensor& ye,
                                         const Tensor& gr, const DispatchPlan& p) {
  // The output gradient travels like the dispatch (BF16 on a BF16 wire); the gate gradients
  // come back like the combine.
  Tensor dr = first_.finish_deliver(r).x;
  if (second_) dr = second_->deliver_wire(dr, *p.second);
  Tensor dgr = last().expert_grads(dye, dr, ye, gr, p.last());
  if (second_) {
    Tensor dg = Tensor::empty({p.first.received, dgr.size(1)}, DType::f32, dgr.device());
    second_->gates_out(dg, dgr, *p.second);
    dgr = dg;
  }
  first_.gates_out(dgates, dgr, p.first);
}

}  // namespace moe
