// Token dispatch for the routed experts (Megatron-Core's token dispatcher, DeepEP's layout):
// a plan made once per micro-batch from the routing, then the payload moved by it.
//
// Expert parallelism: with an ep communicator of P ranks, rank j holds experts [j*El,
// (j+1)*El) (contiguous, so expert groups of group-limited routing map onto ranks). A token
// goes once to each rank holding any of its kept experts: one row per (token, rank) pair,
// with, per top-k slot, the local expert it feeds there and its gate. The experts see their
// rows grouped by expert (one grouped GEMM); the combine sums each row's gated outputs where
// the experts live and sends one row back, or, under a BF16 wire (bf16, fp8), sends each kept
// assignment's output on its own and lets the token apply the gates in top-k order, so no
// rounding depends on how the experts are spread over ranks. Backward mirrors it. Without ep
// the same path runs with no exchange.
//
// The plan is made on the routing's device (ops::route_pairs, counting_sort, ...). What the
// host needs, the sizes of the all-to-alls and of the grouped GEMM, is counts: exchanged with
// the ep ranks on the device and read back in one copy per MoE layer's forward.
#pragma once
#include <cstdint>
#include <vector>

#include "model/linear.h"
#include "model/router.h"
#include "comm/communicator.h"

namespace moe {

// The counts a plan reads back, in one i32 buffer on the device (one copy to the host).
class PlanCounts {
 public:
  PlanCounts(std::int64_t experts, std::int64_t ranks, Device d);
  Tensor routed() const { return part(0, 2 * E_).view({2, E_}); }     // (2,E) load, kept (ops::route_capacity)
  Tensor send_rows() const { return part(2 * E_, P_); }               // (P) rows this rank sends each rank
  Tensor fan_out() const { return part(2 * E_ + P_, 1); }             // (1) most ranks one token reaches
  Tensor recv_rows() const { return part(2 * E_ + P_ + 1, P_); }      // (P) rows each rank sends here
  Tensor recv_kept() const { return part(2 * E_ + 2 * P_ + 1, E_); }  // (P,El) their assignments per local expert
  const Tensor& all() const { return all_; }

 private:
  Tensor part(std::int64_t begin, std::int64_t n) const { return all_.rows(begin, n); }
  std::int64_t E_, P_;  // experts, ep ranks
  Tensor all_;
};

// Statistics of one dispatch, of this rank's tokens: load per expert (before drops), drops,
// the most ranks one token reached, kept assignments on other ranks, and the (token, other
// rank) pairs.
struct DispatchStats {
  std::vector<std::int64_t> load;
  std::int64_t dropped = 0, remote_rows = 0, remote_token_ranks = 0;
  int fan_out = 1;
};

// One micro-batch's dispatch, immutable once made. i32 tensors on the routing's device (-1:
// none); S rows sent, R received, Me expert rows here, Rb per-assignment rows going back.
struct DispatchPlan {
  // Token side.
  Tensor rows;             // (N,P) the send row of each (token, rank) pair
  Tensor send_token;       // (S) the token of each row sent
  Tensor gate_slot;        // (S*K) the assignment whose gate rides in each (row, slot)
  Tensor assignment_slot;  // (N*K) each kept assignment's (row, slot) among those sent
  Tensor back_row;         // (N,K) BF16 wire: each kept assignment's row among those coming back
  // Expert side.
  Tensor slot;         // (R,K) the expert row each received (row, slot) feeds
  Tensor expert_src;   // (Me) the received row each expert row came from
  Tensor expert_slot;  // (Me) and its (row, slot), an index into (R*K)
  Tensor back_src;     // (Rb) BF16 wire: the expert row of each row going back
  // Counts, on the host: rows per rank sent and received, per-assignment rows per rank coming
  // back (slots_in) and going back (slots_out); the experts' row groups (El+1 offsets) and
  // the FP8 weight-gradient segments (offsets refined where the source rank changes).
  std::vector<std::int64_t> send_rows, recv_rows, slots_in, slots_out, offsets, segments;
  std::int64_t sent = 0, received = 0, expert_rows = 0;
  DispatchStats stats;
  void count(SavedBytes& b) const {
    for (const Tensor* t :
         {&rows, &send_token, &gate_slot, &assignment_slot, &back_row, &slot, &expert_src, &expert_slot, &back_src})
      b.add(*t);
  }
};

class Dispatcher {
 public:
  // ep: the expert-parallel group (null: all E experts here). gemm: the wire's precision.
  Dispatcher(Communicator* ep, std::int64_t experts, Gemm gemm);
  // The plan of r (router's counts in counts.routed()): counts exchanged over ep, read back
  // once, the routing metadata sent to the experts' ranks.
  DispatchPlan plan(const Routing& r, const PlanCounts& counts);
  // Tokens x (N,C) -> the expert rows (Me,C), grouped by local expert, in x's GEMM form.
  GemmInput dispatch(const GemmInput& x, const DispatchPlan& p);
  // The gates gates (N,K) -> those of the received rows (R,K), 0 where no local expert.
  Tensor dispatch_gates(const Tensor& gates, const DispatchPlan& p);
  // out (N,C) += the gated expert outputs ye (Me,C) of each token (gr: dispatch_gates').
  void combine(Tensor& out, const Tensor& ye, const Tensor& gates, const Tensor& gr, const DispatchPlan& p);
  // Backward of combine: dye (Me,C) = gate * dout of the row's token (assign), dgates (N,K)
  // = <dout, y> per kept assignment, 0 elsewhere (assign).
  void combine_backward(Tensor& dye, Tensor& dgates, const Tensor& dout, const Tensor& ye, const Tensor& gr,
                        const DispatchPlan& p);
  // Backward of dispatch: dx (N,C) += the expert rows' input gradients dxe (Me,C) per token.
  void dispatch_backward(Tensor& dx, const Tensor& dxe, const DispatchPlan& p);

  std::int64_t local_experts() const { return El_; }
  int ranks() const { return size_; }
  // Bytes of the last dispatch's payload to other ranks (rows and fp8 scales), as counted by ep.
  std::uint64_t dispatch_bytes() const { return dispatch_bytes_; }

 private:
  // Under a BF16 wire the combine and its backward carry one row per kept assignment.
  bool per_assignment() const { return gemm_.bf16_wire(); }
  void exchange_counts(const PlanCounts& counts);
  void plan_tokens(DispatchPlan& p, const Routing& r, Tensor& meta);
  void plan_experts(DispatchPlan& p, const Tensor& meta, std::int64_t K);
  void read_counts(DispatchPlan& p, const PlanCounts& counts);
  Tensor exchange(const Tensor& rows, const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv);
  // f32 rows exchanged in the wire precision (BF16 under bf16_wire), rounded alike without ep.
  Tensor exchange_wire(const Tensor& rows, const std::vector<std::int64_t>& send,
                       const std::vector<std::int64_t>& recv);

  Communicator* ep_;
  int rank_ = 0, size_ = 1;
  std::int64_t E_, El_;  // experts in all, experts on this rank
  Gemm gemm_;
  std::uint64_t dispatch_bytes_ = 0;
};

}  // namespace moe
