// Mixture-of-Experts FFN: shared experts (always on) + routed experts chosen per token.
//   out = shared(x) + sum_i gate_i * expert_{idx_i}(x)
// Four parts, as in Megatron-Core's moe/: the router (model/router.h: scores, choice,
// capacity, balance loss, bias), the dispatch plan and token dispatcher (model/dispatch.h:
// counts, then payload; expert parallelism), the grouped experts (model/experts.h), and the
// shared experts (a SwiGLU). Everything runs on x's device; the host reads the plan's counts
// once per layer's forward.
//
// Tensor parallelism: every tp rank routes the whole micro-batch (identical choices, so
// capacity and the balance loss are those of tp 1), then dispatches only its 1/tp of the
// tokens; shared experts are split like a dense FFN. Forward's output and backward's dx are
// partial sums the caller all-reduces over tp; the router's gradient is a partial sum too
// (Param::tp_partial); loads, drops and the balance loss are counted by their owner alone.
#pragma once
#include <memory>
#include <vector>

#include "config/model_config.h"
#include "model/dispatch.h"
#include "model/experts.h"
#include "model/ffn.h"
#include "model/replicas.h"
#include "model/router.h"

namespace moe {

class MoE {
 public:
  // prefix "model.layers.{i}.mlp."; ep: the expert-parallel group (null: all experts here).
  MoE(const ModelConfig& c, const std::string& prefix, const ExpertGroup& ep = {},
      const TensorParallel& tp = TensorParallel(), Gemm gemm = Gemm());
  // out (B*T,C) from x (B*T,C). aux_total (1) f64 on x's device += the micro-batch's balance
  // loss summed over its sequences (aux_loss_coef * sum_i f_i P_i per sequence).
  void forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T, Tensor& aux_total);
  // dx (assign); aux_scale multiplies the balance-loss sum forward added.
  void backward(Tensor& dx, const Tensor& dout, const Tensor& x, double aux_scale);
  // What forward saved for backward, its only home (see Attention::Saved). The statistics
  // below are not part of it. release() drops it (recomputation).
  struct Saved {
    Routing routing;
    std::shared_ptr<const DispatchPlan> plan;
    ReceivedGates gates_received;  // the gates of the rows received (R,K)
    GroupedExperts::Saved experts;
    Tensor expert_out;  // (Me,C)
    SwiGLU::Saved shared;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&routing.scores, &routing.index, &routing.gates, &routing.kept, &routing.f,
                              &routing.logits, &routing.z_lse, &expert_out})
        b.add(*t);
      gates_received.count(b);
      if (plan) plan->count(b);
      experts.count(b), shared.count(b);
    }
  };
  void swap_saved(Saved& s);
  void release() {
    Saved none;
    swap_saved(none);
  }
  ParamList params();

  Tensor& bias() { return router_.bias(); }
  const std::string& bias_name() const { return router_.bias_name(); }
  void update_bias(const std::vector<double>& global_load, double rate) { router_.update_bias(global_load, rate); }
  std::int64_t experts() const { return router_.experts(); }
  std::int64_t local_experts() const { return El_; }
  // Where rows go on each ep rank: its experts and its replica slots.
  std::int64_t instances_per_rank() const { return dispatcher_.local_experts(); }

  // Redundant experts (model/replicas.h; null without). set_replicas fills the slots
  // (choose_replicas', the same on every rank) and copies the owners' weights; after each
  // optimizer step refresh_replicas copies them again; fold_replica_grads adds the replicas'
  // gradients to their owners' (all three collectives over ep, every ep rank together).
  const ExpertReplicas* replicas() const { return replicas_.get(); }
  void set_replicas(std::vector<std::int32_t> slot_expert);
  void refresh_replicas();
  void fold_replica_grads();

  // Statistics of the last forward (host values from the plan's counts): tokens of this rank
  // routed to each expert (before capacity drops), kept assignments per instance, drops, the most ranks one token was
  // sent to, kept assignments whose expert lives on another rank and the distinct (token, other rank) pairs among them
  // (ranks of the first hop: ep ranks, or nodes under hierarchical dispatch), the rows sent to other nodes, and the
  // dispatch payload's bytes to other ranks (both hops) and to other nodes.
  const std::vector<std::int64_t>& load() const { return stats_.load; }
  const std::vector<std::int64_t>& instance_rows() const { return stats_.kept; }
  std::int64_t dropped() const { return stats_.dropped; }
  int max_ranks_per_token() const { return stats_.fan_out; }
  std::int64_t remote_rows() const { return stats_.remote_rows; }
  std::int64_t remote_token_ranks() const { return stats_.remote_token_ranks; }
  std::int64_t inter_node_rows() const { return stats_.inter_node_rows; }
  std::uint64_t dispatch_bytes() const { return dispatcher_.dispatch_bytes(); }
  std::uint64_t inter_node_bytes() const { return dispatcher_.inter_node_bytes(); }
  std::uint64_t back_inter_node_bytes() const { return dispatcher_.back_inter_node_bytes(); }
  // The last forward's choices as host copies (for tests: each one a copy): expert index
  // (N,K) i32, and the kept ones (-1: dropped or another tp rank's token).
  Tensor routing() const { return to_host(saved_.routing.index); }
  Tensor kept() const { return to_host(saved_.routing.kept); }

 private:
  std::int64_t C_, El_;  // d_model, experts on this rank
  TensorParallel tp_;
  Gemm gemm_;
  Router router_;
  Dispatcher dispatcher_;
  GroupedExperts experts_;
  std::unique_ptr<SwiGLU> shared_;  // null without shared experts
  std::unique_ptr<ExpertReplicas> replicas_;
  bool overlap_;         // the shared experts compute while the payload travels
  Saved saved_;          // (its shared part lives in shared_)
  DispatchStats stats_;  // the last forward's
};

}  // namespace moe
