// Token dispatch for the routed experts (Megatron-Core's token dispatcher, DeepEP's layout):
// a plan made once per micro-batch from the routing, then the payload moved by it, in one or
// two hops (model/dispatch_hop.h).
//
// Expert parallelism: with an ep group of P ranks, rank j holds experts [j*El, (j+1)*El)
// (contiguous, so expert groups of group-limited routing map onto ranks and nodes). Flat
// dispatch: one hop over ep, a token sent once to each rank holding any of its kept experts,
// over whatever link joins them. Hierarchical dispatch (DeepEP's internode kernels), where
// the group spans nodes: the first hop sends a token once to each node holding one of its
// experts, to the rank at the sender's own place there (one link of the rail), and that rank
// forwards it to the ranks of its node holding the experts (the second hop, inside the node).
// The way back mirrors it: the second hop's results are summed per token at the forwarder
// (by row) or passed on as they are (per assignment, BF16: rounding then equals the flat
// dispatch's bit for bit) and cross the network once. A node-reduced combine (DeepEP's,
// parallel.node_reduced_combine) sums them at the forwarder on the BF16 wire too: gated in
// FP32, one BF16 row per (token, node) across the network instead of one per assignment,
// the rounding of each node's partial sum then being the difference from the flat dispatch.
// Without ep the same path runs with no exchange.
#pragma once
#include <cstdint>
#include <optional>

#include "comm/expert_group.h"
#include "model/dispatch_hop.h"
#include "model/router.h"

namespace moe {

// One micro-batch's dispatch, immutable once made: the plan of each hop, the last one's
// at the experts.
struct DispatchPlan {
  HopPlan first;
  std::optional<HopPlan> second;  // hierarchical: inside the node
  Tensor glue;                    // (Rb1) per assignment: each first-hop row going back among the second's returned
  DispatchStats stats;
  const HopPlan& last() const { return second ? *second : first; }
  std::int64_t expert_rows() const { return last().expert_rows; }
  const std::vector<std::int64_t>& offsets() const { return last().offsets; }
  const std::vector<std::int64_t>& segments() const { return last().segments; }
  void count(SavedBytes& b) const {
    first.count(b);
    if (second) second->count(b);
    b.add(glue);
  }
};

// The gates where the rows arrive (dispatch_gates): at the experts (R,K), and for a
// node-reduced combine at the forwarders too (R1,K; else undefined).
struct ReceivedGates {
  Tensor experts, forwarders;
  void count(SavedBytes& b) const { b.add(experts), b.add(forwarders); }
};

class Dispatcher {
 public:
  // experts: routed experts in all. gemm: the wire's precision. instances: where rows go, over
  // all ranks (redundant experts: El + R slots a rank; 0: the experts).
  Dispatcher(const ExpertGroup& group, std::int64_t experts, Gemm gemm, std::int64_t instances = 0);
  // The counts the router fills (routed()) for plan.
  PlanCounts counts(Device d) const { return PlanCounts(E_, first_.ranks(), d, I_); }
  // The plan of the kept assignments (N,K), by instance (the router's counts in
  // counts.routed(), the instances' in counts.kept()): counts exchanged, read back once per
  // hop, the routing metadata sent to the instances' ranks.
  DispatchPlan plan(const Tensor& kept, const PlanCounts& counts);
  // Tokens x (N,C) -> the expert rows (Me,C), grouped by local expert, in x's GEMM form.
  GemmInput dispatch(const GemmInput& x, const DispatchPlan& p) {
    PendingRows r = start_dispatch(x, p);
    return finish_dispatch(r, p);
  }
  // The same in two halves: the first hop's payload travels between them (the MoE layer's
  // shared experts compute meanwhile).
  PendingRows start_dispatch(const GemmInput& x, const DispatchPlan& p) { return first_.start_deliver(x, p.first); }
  GemmInput finish_dispatch(PendingRows& r, const DispatchPlan& p);
  // The gates gates (N,K) -> those of the received rows (R,K), 0 where no local expert.
  ReceivedGates dispatch_gates(const Tensor& gates, const DispatchPlan& p);
  // out (N,C) += the gated expert outputs ye (Me,C) of each token (gr: dispatch_gates').
  void combine(Tensor& out, const Tensor& ye, const Tensor& gates, const ReceivedGates& gr, const DispatchPlan& p);
  // Backward of combine: dye (Me,C) = gate * dout of the row's token (assign), dgates (N,K)
  // = <dout, y> per kept assignment, 0 elsewhere (assign).
  void combine_backward(Tensor& dye, Tensor& dgates, const Tensor& dout, const Tensor& ye, const Tensor& gr,
                        const DispatchPlan& p) {
    PendingRows r = start_combine_backward(dout, p);
    finish_combine_backward(r, dye, dgates, ye, gr, p);
  }
  // The same in two halves: dout's rows travel between them.
  PendingRows start_combine_backward(const Tensor& dout, const DispatchPlan& p) {
    return first_.start_deliver_wire(dout, p.first);
  }
  void finish_combine_backward(PendingRows& r, Tensor& dye, Tensor& dgates, const Tensor& ye, const Tensor& gr,
                               const DispatchPlan& p);
  // Backward of dispatch: dx (N,C) += the expert rows' input gradients dxe (Me,C) per token.
  void dispatch_backward(Tensor& dx, const Tensor& dxe, const DispatchPlan& p);

  std::int64_t local_experts() const { return last().local_experts(); }
  bool hierarchical() const { return second_.has_value(); }
  // Bytes of the last dispatch's payload (rows and fp8 scales) to other ranks, both hops, and
  // the part of it that crossed nodes.
  std::uint64_t dispatch_bytes() const { return first_.bytes() + (second_ ? second_->bytes() : 0); }
  std::uint64_t inter_node_bytes() const { return first_.inter_node_bytes(); }
  // Bytes of the last way back (combine, or the input gradient) this rank sent across nodes.
  std::uint64_t back_inter_node_bytes() const { return first_.back_inter_node_bytes(); }

 private:
  DispatchHop& last() { return second_ ? *second_ : first_; }
  const DispatchHop& last() const { return second_ ? *second_ : first_; }
  // The plan inside the node, from the first hop's received metadata (R1,K).
  HopPlan plan_second(const Tensor& received);
  // FP8: the second hop's segments split where the source node changes too (tile_segments).
  void split_segments(HopPlan& second, const HopPlan& first);
  // out (N,C) += what the last hop's experts send back (reduce_back's rows), through both hops;
  // gates at the tokens, and at the forwarders where the combine is node-reduced.
  void bring_back(Tensor& out, const Tensor& back, const Tensor& gates, const Tensor& forwarder_gates,
                  const DispatchPlan& p);

  std::int64_t E_, I_;            // experts, instances
  Communicator* node_ = nullptr;  // hierarchical: the ranks of this node
  bool fp8_;
  bool node_reduced_;  // the BF16 way back summed at the forwarders
  DispatchHop first_;
  std::optional<DispatchHop> second_;
};

}  // namespace moe
