// Mixture-of-Experts FFN: shared experts (always on) + routed experts chosen per token.
//   out = shared(x) + sum_i gate_i * expert_{idx_i}(x)
// Router and balancing follow ../shared/DESIGN.md: selection by score + bias, gates from the
// scores, bias nudged toward balance after each step; optional sequence-wise balance loss
// and capacity factor (assignments past an expert's capacity are dropped, in token order;
// capacity counts this rank's micro-batch, before any dispatch).
//
// Expert parallelism: with an ep communicator of p ranks, rank r holds experts
// [r*E/p, (r+1)*E/p) (contiguous, so expert groups of group-limited routing map onto ranks).
// Routing is local. Dispatch sends a token once to each rank holding any of its kept experts
// (row counts first, then the rows and, per top-k slot, the local expert and gate, by
// all-to-all-v); the experts run as one grouped GEMM over the rows they received; combine
// sums each row's gated expert outputs where the experts live and sends one row back.
// Backward mirrors it: output gradients go out like the dispatch; input gradients (summed
// per row) and gate gradients come back. Without ep the same path runs with no exchange.
//
// Tensor parallelism: every tp rank routes the whole micro-batch (identical choices, so
// capacity and the balance loss are those of tp 1), then dispatches only its 1/tp of the
// tokens; shared experts are split like a dense FFN. Forward's output and backward's dx are
// partial sums the caller all-reduces over tp; the router's gradient is a partial sum too
// (Param::tp_partial); loads, drops and the balance loss are counted by their owner alone.
#pragma once
#include <memory>
#include <vector>

#include "kernels/ops.h"
#include "model/config.h"
#include "model/ffn.h"
#include "model/linear.h"
#include "model/param.h"
#include "parallel/communicator.h"

namespace moe {

class MoE {
 public:
  // prefix "model.layers.{i}.mlp."; ep: the expert-parallel group (null: all experts here).
  MoE(const ModelConfig& c, const std::string& prefix, Communicator* ep = nullptr,
      const TensorParallel& tp = TensorParallel(), Gemm gemm = Gemm());
  // out (B*T,C) from x (B*T,C). Returns the balance loss of this micro-batch summed over its
  // sequences (aux_loss_coef * sum_i f_i P_i per sequence; 0 when the coefficient is 0).
  double forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T);
  // dx (assign); aux_scale multiplies the balance-loss sum returned by forward.
  void backward(Tensor& dx, const Tensor& dout, const Tensor& x, double aux_scale);
  // What forward saved for backward (see Attention::Saved); loads and statistics are not
  // part of it. release() drops it (recomputation).
  struct Saved {
    Tensor scores, index, gates, ge, ue, ye, gr;
    Tensor index_host;  // index's host copy, which the plan is made from
    GemmInput xe, he;
    std::vector<std::int64_t> pos, row_of, send_rows, recv_rows, local_offsets, segments, slot, slot_row, slots_in,
        slots_out;
    std::int64_t send_rows_total = 0, recv_rows_total = 0, T = 0, n0 = 0, n1 = 0;
    std::vector<double> f;
    SwiGLU::Saved shared;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&scores, &index, &gates, &ge, &ue, &ye, &gr}) b.add(*t);
      b.add(xe), b.add(he);
      shared.count(b);
    }
  };
  void swap_saved(Saved& s);
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params();

  // e_score_correction_bias (E, all experts): steers selection, not trained by gradients.
  Tensor& bias() { return bias_; }
  const std::string& bias_name() const { return bias_name_; }
  // Tokens of this rank routed to each expert by the last forward (before capacity drops), and drops.
  const std::vector<std::int64_t>& load() const { return load_; }
  std::int64_t dropped() const { return dropped_; }
  // The last forward's choices: expert index (N,K) i32 (a host copy), and whether each
  // assignment was kept.
  const Tensor& routing() const { return index_host_; }
  bool kept(std::int64_t assignment) const { return pos_[static_cast<std::size_t>(assignment)] >= 0; }
  // Most expert-parallel ranks any one token of the last forward was sent to (1 without ep).
  int max_ranks_per_token() const { return max_ranks_; }
  // Kept assignments of the last forward whose expert lives on another ep rank, and distinct
  // (token, other rank) pairs among them (the rows dispatch sends).
  std::int64_t remote_rows() const { return remote_rows_; }
  std::int64_t remote_token_ranks() const { return remote_token_ranks_; }
  // Bytes this rank sent to other ep ranks in the last forward's dispatch (the rows and their
  // scales under fp8; the routing metadata is not counted), as the communicator counted them.
  std::uint64_t dispatch_bytes() const { return dispatch_bytes_; }
  // b_e += rate * sign(mean(load) - load_e), with the load summed over the global batch.
  void update_bias(const std::vector<double>& global_load, double rate);

  std::int64_t experts() const { return E_; }
  std::int64_t local_experts() const { return El_; }

 private:
  void plan_rows(std::int64_t N);
  void exchange_counts();
  Tensor exchange(const Tensor& rows, bool back);
  Tensor exchange(const Tensor& rows, const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv);
  GemmInput exchange(const GemmInput& rows);  // the dispatch payload, out to the experts
  // f32 rows exchanged in the wire precision (Gemm::bf16_wire: BF16), rounded alike without ep.
  Tensor exchange_wire(const Tensor& rows, const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv);
  // Under a BF16 wire the combine (and its backward) carries one row per kept assignment
  // rather than a sum per (token, rank): a rounded partial sum would depend on how the
  // experts are spread over ranks, one expert's row does not.
  bool slot_combine() const { return gemm_.bf16_wire(); }
  // (expert rows) -> one row per (received row, slot) in for_each_slot's order.
  Tensor slot_rows(const Tensor& expert_rows) const;
  // f(assignment, row of the per-assignment combine) for this rank's kept assignments, in order.
  template <class F> void for_each_assignment(F&& f) const {
    for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a)
      if (const auto row = slot_row_[std::size_t(a)]; row >= 0) f(a, row);
  }
  void plan_experts(const Tensor& meta);
  // The routing plan as lists for the row ops (ops::gather_rows, gather_sum), built on the
  // host in the order the sums run (output rows non-decreasing).
  class SumList {
   public:
    explicit SumList(std::int64_t rows) : rows_(rows) {}
    void add(std::int64_t row, std::int64_t src, std::int64_t widx = 0);
    ops::RowSums sums();
    std::span<const std::int32_t> sources() const { return src_; }

   private:
    std::int64_t rows_;
    std::vector<std::int32_t> offsets_, src_, widx_;
  };
  std::vector<std::int32_t> send_sources(std::int64_t N) const;  // token of each row sent
  SumList token_rows(std::int64_t N) const;   // token n <- the rows its ranks sent back
  SumList token_slots(std::int64_t N) const;  // token n <- its assignments' rows, weight: the gate
  SumList slot_sums() const;                  // received row r <- its local experts' rows, weight gr_[r, k]
  SumList expert_sources() const;             // expert row sl <- the received row it came from, weight gr_[r, k]
  // f(token, row) for every row this rank sends, in (token, rank) order.
  template <class F> void for_each_row(std::int64_t N, F&& f) const {
    const auto p = static_cast<std::size_t>(ep_size_);
    for (std::int64_t n = 0; n < N; ++n)
      for (std::size_t j = 0; j < p; ++j)
        if (const auto r = row_of_[std::size_t(n) * p + j]; r >= 0) f(n, r);
  }
  // f(received row, top-k slot, row of xe) for every slot that feeds a local expert.
  template <class F> void for_each_slot(F&& f) const {
    for (std::int64_t r = 0; r < recv_rows_total_; ++r)
      for (std::int64_t k = 0; k < K_; ++k)
        if (const auto sl = slot_[std::size_t(r * K_ + k)]; sl >= 0) f(r, k, sl);
  }

  std::int64_t C_, E_, K_, H_, T_ = 0;
  Communicator* ep_;
  TensorParallel tp_;
  Gemm gemm_;
  std::int64_t n0_ = 0, n1_ = 0;  // the tokens this tp rank dispatches
  int ep_rank_ = 0, ep_size_ = 1;
  std::int64_t El_;  // experts held here
  ops::RouterSpec spec_;
  double capacity_factor_, aux_coef_;
  Param router_;
  std::string bias_name_;
  Tensor bias_;
  Param gate_, up_, down_;         // routed experts held here: (El,H,C), (El,H,C), (El,C,H)
  std::unique_ptr<SwiGLU> shared_;  // null without shared experts
  // Saved by forward. Token side: row_of_ (N*ep) the send row of each (token, rank) pair, -1
  // if the token has no kept expert there. Expert side: xe (Me,C) the rows the local experts
  // received, grouped by local expert (local_offsets_), slot_ (R*K) where received row r's
  // k-th choice sits in xe (-1: another rank's expert), gr_ (R,K) the gates that came with it.
  // segments_: local_offsets_ refined where the source rank changes inside an expert's rows,
  // so FP8 weight-gradient tiles hold one source micro-batch's tokens, as without ep.
  Tensor scores, index, gates, ge, ue, ye, gr_;
  Tensor index_host_;  // index on the host: what the plan below is made from
  GemmInput xe, he;  // the experts' GEMM inputs (Me,C), (Me,H)
  std::vector<std::int64_t> pos_;      // (N*K) place among its expert's kept assignments, -1 if dropped
  std::vector<std::int64_t> row_of_, send_rows_, recv_rows_, local_offsets_, segments_, slot_;
  // Per-assignment combine: slot_row_ (N*K) each kept assignment's row among those coming
  // back (-1: none); slots_in_ / slots_out_ rows per rank coming back / going back.
  std::vector<std::int64_t> slot_row_, slots_in_, slots_out_;
  std::int64_t send_rows_total_ = 0, recv_rows_total_ = 0;
  std::vector<std::int64_t> load_;
  std::vector<double> f_;              // (B,E) selection fractions for the balance loss
  std::int64_t dropped_ = 0;
  int max_ranks_ = 1;
  std::int64_t remote_rows_ = 0, remote_token_ranks_ = 0;
  std::uint64_t dispatch_bytes_ = 0;
};

}  // namespace moe
