// The state of a Trainer (trainer/train.h), shared by the training loop (train.cpp) and the
// run's bookkeeping (trainer_state.cpp: checkpoints, resume, the cost counters). Internal.
#pragma once
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/dir_lock.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "parallel/mesh.h"
#include "parallel/param_group.h"
#include "plan/stages.h"
#include "trainer/checkpoint_plan.h"
#include "trainer/cost.h"
#include "trainer/run_meta.h"
#include "trainer/train.h"

namespace moe {

using Clock = std::chrono::steady_clock;
inline double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Trainer::State {
  State(const Config& c, MpiCommunicator& w)
      : cfg(c),
        world(w),
        layout(trainable_layout(c, w)),
        mesh(layout, w, device_of(c.device)),
        bounds(stage_bounds(c, layout.pp * int(c.parallel.chunks()))),
        model(c.model, shard(), c.precision) {}
  const Config cfg;
  MpiCommunicator& world;
  const Layout layout;
  Mesh mesh;
  Communicator& dp() { return mesh.dp(); }
  Communicator& edp() { return mesh.edp(); }
  Communicator& ep() { return mesh.ep(); }
  // Bytes sent on every axis, per kind; and their time.
  std::map<std::string, std::uint64_t> bytes_sent() const { return mesh.bytes_sent(); }
  void reset_bytes() { mesh.reset_bytes(); }
  const std::vector<std::int64_t> bounds;  // blocks of each virtual pipeline stage (plan/stages.h)
  // This rank's chunks: virtual stages s, p + s, ... (one without interleaving; s and 2p-1-s
  // under DualPipeV).
  ModelShard shard() {
    ModelShard sh{.ep = mesh.expert_group(), .tp = layout.tp > 1 ? &mesh.tp() : nullptr, .chunks = {}};
    const PipeShape shape = pipe_shape(cfg, layout.pp);
    for (int c = 0; c < shape.chunks; ++c) {
      const auto vs = std::size_t(shape.virtual_stage(mesh.coords().pp, c));
      sh.chunks.push_back({bounds[vs], bounds[vs + 1]});
    }
    return sh;
  }
  Transformer model;
  std::unique_ptr<ParamGroup> dense, experts;                // trained: reduced over dp / over edp
  std::unique_ptr<ParamGroup> frozen_dense, frozen_experts;  // kept fixed: weights alone
  ParamList params;
  // Every group (checkpoints write and read them all).
  std::vector<ParamGroup*> groups() { return {dense.get(), experts.get(), frozen_dense.get(), frozen_experts.get()}; }
  std::int64_t global_seqs() const { return layout.dp * cfg.train.grad_accum * cfg.train.micro_batch; }

  // Cost accounting (trainer/cost.h): this launch's time by category, on this rank.
  Cluster cluster;
  CostCounters prior;  // earlier launches, from the checkpoint resumed
  // Redundant experts' state (the loop's, RunMeta::replicas): written with each checkpoint,
  // read back on resume.
  std::string replicas;
  Clock::time_point launch_t0 = Clock::now();
  // side_comm, side_pp: communication (all of it, and on the pp axis) inside eval/checkpoints
  double comm0 = 0, pp0 = 0, eval_s = 0, ckpt_s = 0, side_comm = 0, side_pp = 0;
  double comm_now() { return mesh.comm_seconds(); }
  // Runs f (an evaluation or a checkpoint), adding its time to `bucket` and keeping its
  // communication time and bytes out of the training steps' figures.
  std::map<std::string, std::uint64_t> side_bytes;
  std::int64_t side_flops = 0;  // GEMM FLOPs inside them
  template <class F>
  void timed(double& bucket, F&& f) {
    const double c0 = comm_now(), p0 = mesh.pp().seconds();
    const auto b0 = bytes_sent();
    const auto f0 = ops::gemm_flops();
    const auto t = Clock::now();
    f();
    bucket += since(t);
    side_flops += ops::gemm_flops() - f0;
    side_comm += comm_now() - c0;
    side_pp += mesh.pp().seconds() - p0;
    for (const auto& [kind, bytes] : bytes_sent()) side_bytes[kind] += bytes - (b0.count(kind) ? b0.at(kind) : 0);
  }
  // Bytes this rank sent in training steps since the mesh counters were reset, per kind.
  std::map<std::string, std::uint64_t> step_bytes() const {
    auto out = bytes_sent();
    for (auto& [kind, bytes] : out) bytes -= side_bytes.count(kind) ? side_bytes.at(kind) : 0;
    return out;
  }
  // Collective: every launch so far, this one's categories averaged over ranks.
  CostCounters cost_so_far(double tokens_total);
  // Collective: rank 0 reads checkpoint.dir/latest and every rank gets its answer (a
  // directory that looks different from another node, or a stale NFS lookup, must not
  // split the ranks between resuming and starting fresh). Its error is everyone's.
  std::optional<std::string> agreed_latest();

  void keep_fresh_adapters(const std::string& path, CheckpointPlan& plan) const;
  RunMeta load(const std::string& path, CheckpointPart part);
  void expect_nothing_left_out(const std::string& path, const std::vector<ckpt::Dataset>& datasets,
                               CheckpointPart part) const;
  // Collective: rank 0 takes checkpoint.dir's lock (data/dir_lock.h) while run() trains; a run
  // already writing there is every rank's ConfigError.
  std::unique_ptr<DirLock> run_lock;
  void lock_run_dir();
  // Collective over pp: stage `stage`'s list of names and shapes on every stage; every
  // stage's, in stage order (a stage lists only its own tensors).
  // ConfigError where `checkpoint` recorded another tokenizer than data.dir's ("resume", "fine-tune from").
  void expect_same_tokenizer(const std::string& checkpoint, const char* what) const;
  std::vector<ckpt::Dataset> stage_list(const std::vector<ckpt::Dataset>& mine, int stage);
  std::vector<ckpt::Dataset> join_stages(const std::vector<ckpt::Dataset>& mine);
  // Collective: checkpoint.dir/step_N.h5, committed as the latest once every rank wrote it;
  // with checkpoint.async the chunk writes go on behind the next steps (pending), committed
  // by finish_pending: at the next save, at the end, or when poll_pending finds every rank's
  // writes done.
  void save(std::int64_t step, const TrainResult& res, double last_loss, double val_loss);
  ckpt::PendingWrite pending;
  std::string pending_path;
  Clock::time_point pending_t0;
  void finish_pending(std::int64_t step);  // (step: the last step done, for the log)
  void poll_pending(std::int64_t step);    // collective while a write is pending (one scalar all-reduce)
  void commit(const std::string& path, Clock::time_point t0, const char* how);

  // Where this launch starts: the run's own latest checkpoint (everything), else
  // checkpoint.init_from (weights only, then evaluated), else step 0. Fills res's resume
  // fields; returns the step.
  std::int64_t begin(TrainResult& res, const std::function<double()>& evaluate, bool log_rank);
  // The cost report of every launch so far into res, and cost.json beside the checkpoints.
  void finish(TrainResult& res);
};

}  // namespace moe
