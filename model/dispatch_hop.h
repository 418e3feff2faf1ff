// One hop of the token dispatch (model/dispatch.h): rows of tokens sent over one communicator
// to the ranks holding their experts, and the experts' results brought back.
//
// Rank j of the hop's P ranks holds "experts" [j*El, (j+1)*El): the routed experts on a flat
// dispatch, or a whole node's experts on the first hop of a hierarchical one. A token goes
// once to each rank holding any of its kept experts: one row per (token, rank) pair, with,
// per top-k slot, the local expert it feeds there (the metadata, -1 where none) and its gate.
//
// The halves:
//   token side   deliver (payload out), gates_in, return_rows + accumulate (results back),
//                gates_out (gate gradients back)
//   expert side  group (received rows by local expert), reduce_back (what goes back)
// so that a second hop can stand between them: it takes the rows a hop delivered as its
// tokens and the received metadata as their routing.
//
// Two forms of the way back. By row: each received row's gated sum over its local experts
// goes back as one row (in the wire precision). Per assignment (a BF16 wire: bf16, fp8,
// unless the hop sums its rows back): each kept assignment's output goes back on its own and
// the token applies the gates in top-k order, so no rounding depends on how the experts are
// spread over ranks.
//
// The plan is made on the routing's device (ops::route_pairs, counting_sort, ...). What the
// host needs, the sizes of the all-to-alls and of the grouped GEMM, is counts: exchanged with
// the hop's ranks on the device and read back in one copy.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "model/linear.h"
#include "comm/communicator.h"

namespace moe {

// The counts a plan reads back, in one i32 buffer on the device (one copy to the host).
// Experts are the router's; instances where the dispatch sends rows: the experts themselves,
// or with redundant experts every rank's El + R slots (model/replicas.h).
class PlanCounts {
 public:
  PlanCounts(std::int64_t experts, std::int64_t ranks, Device d, std::int64_t instances = 0 /* = experts */);
  Tensor routed() const { return part(0, 2 * E_).view({2, E_}); }  // (2,E) load, kept (ops::route_capacity)
  // (I) kept per instance (without replicas, routed()'s second row)
  Tensor kept() const { return part(kept_at(), I_); }
  Tensor send_rows() const { return part(base(), P_); }               // (P) rows this rank sends each rank
  Tensor fan_out() const { return part(base() + P_, 1); }             // (1) most ranks one token reaches
  Tensor recv_rows() const { return part(base() + P_ + 1, P_); }      // (P) rows each rank sends here
  Tensor recv_kept() const { return part(base() + 2 * P_ + 1, I_); }  // (P,Il) their assignments per local instance
  const Tensor& all() const { return all_; }
  std::int64_t experts() const { return E_; }
  // Where each part starts in all().
  std::int64_t kept_at() const { return I_ == E_ ? E_ : 2 * E_; }
  std::int64_t base() const { return kept_at() + I_; }

 private:
  Tensor part(std::int64_t begin, std::int64_t n) const { return all_.rows(begin, n); }
  std::int64_t E_, I_, P_;  // experts, instances, ranks
  Tensor all_;
};

// Statistics of one dispatch, of this rank's tokens: load per expert (before drops), kept
// assignments per instance, drops, the most ranks (of the first hop) one token reached, kept
// assignments on other ranks and the (token, other rank) pairs; and the rows this rank sent
// to other nodes.
struct DispatchStats {
  std::vector<std::int64_t> load, kept;
  std::int64_t dropped = 0, remote_rows = 0, remote_token_ranks = 0, inter_node_rows = 0;
  int fan_out = 1;
};

// One hop's plan, immutable once made. i32 tensors on the routing's device (-1: none); S rows
// sent, R received, Me expert rows here, Rb per-assignment rows going back.
struct HopPlan {
  // Token side.
  Tensor rows;             // (N,P) the send row of each (token, rank) pair
  Tensor send_token;       // (S) the token of each row sent
  Tensor gate_slot;        // (S*K) the assignment whose gate rides in each (row, slot)
  Tensor assignment_slot;  // (N*K) each kept assignment's (row, slot) among those sent
  Tensor back_row;         // (N,K) per assignment: each kept assignment's row among those coming back
  // Expert side.
  Tensor slot;         // (R,K) the expert row each received (row, slot) feeds
  Tensor expert_src;   // (Me) the received row each expert row came from
  Tensor expert_slot;  // (Me) and its (row, slot), an index into (R*K)
  Tensor back_src;     // (Rb) per assignment: the expert row of each row going back
  Tensor back_slot;    // (Rb) per assignment: and its (row, slot), an index into (R*K)
  // Counts, on the host: rows per rank sent and received, per-assignment rows per rank coming
  // back (slots_in) and going back (slots_out); the experts' row groups (El+1 offsets) and
  // the FP8 weight-gradient segments (offsets refined where the source rank changes).
  std::vector<std::int64_t> send_rows, recv_rows, slots_in, slots_out, offsets, segments;
  std::vector<std::int64_t> kept_in;  // (P,El) the kept assignments each rank sends here, per local expert (instance)
  std::int64_t sent = 0, received = 0, expert_rows = 0;
  DispatchStats stats;
  void count(SavedBytes& b) const {
    for (const Tensor* t : {&rows, &send_token, &gate_slot, &assignment_slot, &back_row, &slot, &expert_src,
                            &expert_slot, &back_src, &back_slot})
      b.add(*t);
  }
};

// The FP8 weight-gradient segments of expert rows grouped by expert (El+1 offsets), each
// expert's rows in order of their sources: counts (sources,El) rows per source and expert.
// A tile never straddles two sources, so it holds the rows it would hold unsharded.
std::vector<std::int64_t> tile_segments(const std::vector<std::int64_t>& offsets, const std::int64_t* counts,
                                        std::int64_t sources);

// A payload exchange in flight (DispatchHop::start_deliver*), ended by finish_deliver.
struct PendingRows {
  PendingExchange rows, scale;
  GemmInput got;       // the received rows, once finished
  bool widen = false;  // BF16 wire: got.x back to f32 at the end
};

class DispatchHop {
 public:
  // comm: the hop's ranks (null or one rank: no exchange). experts: over all of them.
  // ranks_per_node: consecutive ranks of comm sharing a node (for the inter-node statistics).
  // gemm: the wire's precision. summed_back: the way back by row even on a BF16 wire.
  DispatchHop(Communicator* comm, std::int64_t experts, int ranks_per_node, Gemm gemm, bool summed_back = false);
  // The plan of kept (N,K), the hop's "experts" (instances) per assignment, their counts in
  // counts.kept(): counts exchanged, read back once, the routing metadata sent to the ranks
  // holding them. received (R,K), when asked for: that metadata as it arrived, per slot the
  // local one here or -1.
  HopPlan plan(const Tensor& kept, const PlanCounts& counts, Tensor* received = nullptr);

  // Token side. Rows of the tokens x (N,C) -> the received rows (R,C), in x's GEMM form.
  GemmInput deliver(const GemmInput& x, const HopPlan& p) {
    PendingRows r = start_deliver(x, p);
    return finish_deliver(r);
  }
  // f32 rows (N,C) -> (R,C) in the wire precision (BF16 under a BF16 wire).
  Tensor deliver_wire(const Tensor& x, const HopPlan& p) {
    PendingRows r = start_deliver_wire(x, p);
    return finish_deliver(r).x;
  }
  // The same in two halves: this rank computes between them.
  PendingRows start_deliver(const GemmInput& x, const HopPlan& p);
  PendingRows start_deliver_wire(const Tensor& x, const HopPlan& p);
  GemmInput finish_deliver(PendingRows& r);
  // gates (N,K) -> those of the received rows (R,K), 0 where no local expert.
  Tensor gates_in(const Tensor& gates, const HopPlan& p);
  // The rows reduce_back made, brought back to the tokens (in the wire precision).
  Tensor return_rows(const Tensor& back, const HopPlan& p);
  // out (N,C) += the returned rows of each token; per assignment they are weighted by gates
  // (N,K) (undefined: 1) in top-k order.
  void accumulate(Tensor& out, const Tensor& returned, const Tensor& gates, const HopPlan& p);
  // dgates (N,K) = the gate gradients of the received rows dgr (R,K) (assign, 0 where none).
  void gates_out(Tensor& dgates, const Tensor& dgr, const HopPlan& p);

  // Expert side. Received rows (R,C) -> the expert rows (Me,C), grouped by local expert.
  GemmInput group(const GemmInput& received, const HopPlan& p) const { return received.gather(p.expert_src); }
  // Expert rows ye (Me,C) -> what goes back: by row the gated sums (R,C) (gr (R,K), undefined:
  // ungated), per assignment the rows (Rb,C).
  Tensor reduce_back(const Tensor& ye, const Tensor& gr, const HopPlan& p);
  // The combine's backward at the experts, from the output gradient received dr (R,C): dye
  // (Me,C) = gate * dr of the row (assign); returns dgr (R,K) = <dr, y> per local expert, y as
  // the token received it (BF16 on a BF16 wire), 0 elsewhere.
  Tensor expert_grads(Tensor& dye, const Tensor& dr, const Tensor& ye, const Tensor& gr, const HopPlan& p);

  bool per_assignment() const { return gemm_.bf16_wire() && !summed_back_; }
  std::int64_t local_experts() const { return El_; }
  int ranks() const { return size_; }
  // Payload bytes (rows and fp8 scales) of the last deliver to other ranks, and to other nodes;
  // bytes of the last way back (return_rows) this rank sent to other nodes.
  std::uint64_t bytes() const { return bytes_; }
  std::uint64_t inter_node_bytes() const { return inter_bytes_; }
  std::uint64_t back_inter_node_bytes() const { return back_inter_bytes_; }

 private:
  bool other_node(std::size_t j) const { return int(j) / per_node_ != rank_ / per_node_; }
  void exchange_counts(const PlanCounts& counts);
  void plan_tokens(HopPlan& p, const Tensor& kept, Tensor& meta);
  void plan_experts(HopPlan& p, const Tensor& meta, std::int64_t K);
  void read_counts(HopPlan& p, const PlanCounts& counts);
  Tensor exchange(const Tensor& rows, const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv);
  // rows (and their scales, when defined) started on their way.
  PendingRows start(const Tensor& rows, const Tensor& scale, const std::vector<std::int64_t>& send,
                    const std::vector<std::int64_t>& recv);
  // f32 rows exchanged in the wire precision (BF16 under bf16_wire), rounded alike without a peer.
  Tensor exchange_wire(const Tensor& rows, const std::vector<std::int64_t>& send,
                       const std::vector<std::int64_t>& recv);

  Communicator* comm_;
  int rank_ = 0, size_ = 1, per_node_;
  std::int64_t E_, El_;  // experts in all, experts on this rank
  Gemm gemm_;
  bool summed_back_;
  std::uint64_t bytes_ = 0, inter_bytes_ = 0, back_inter_bytes_ = 0;
};

}  // namespace moe
