// Trainer::run: the training loop as named steps in the order a token flows (llm.c's train
// loop is the model): zero grads -> micro-batches through the schedule (forward_micro /
// backward_micro) -> reduce -> norm and clip -> optimizer -> router biases -> log and
// metrics -> maybe checkpoint. Trainer::Loop holds what the steps of one launch share.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <functional>
#include <numeric>
#include <optional>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>

#include "checkpoint/store.h"
#include "comm/pipeline.h"
#include "data/loader.h"
#include "data/mixture.h"
#include "data/prepare.h"
#include "kernels/ops.h"
#include "plan/counts.h"
#include "plan/plan.h"
#include "trainer/fault_drill.h"
#include "trainer/metrics.h"
#include "trainer/progress.h"
#include "trainer/step_guard.h"
#include "trainer/train.h"
#include "trainer/trainer_state.h"
#include "trainer/watchdog.h"

namespace moe {
namespace {
volatile std::sig_atomic_t g_stop = 0;

nlohmann::json data_meta(const std::string& dir) {
  std::ifstream in(std::filesystem::path(dir) / "meta.json");
  if (!in) return nlohmann::json::object();
  auto meta = nlohmann::json::parse(in, nullptr, false);
  return meta.is_object() ? meta : nlohmann::json::object();
}

// The run's training sources: data.sources, or data.dir alone.
std::vector<DataSource> sources_of(const Config& cfg) {
  return cfg.data.sources.empty() ? std::vector<DataSource>{{cfg.data.dir, 1.0}} : cfg.data.sources;
}

// Their training splits, each checked to speak data.dir's tokenizer (the same ids mean the
// same text in every source).
std::vector<std::unique_ptr<data::PreparedSplit>> open_sources(const Config& cfg) {
  const std::vector<DataSource> list = sources_of(cfg);
  const std::string ours = data::tokenizer_digest(cfg.data.dir);
  std::vector<std::unique_ptr<data::PreparedSplit>> out;
  for (const DataSource& src : list) {
    const std::string theirs = data::tokenizer_digest(src.dir);
    MOE_CHECK(theirs == ours, DataError,
              "{}: data.sources: {} was prepared with another tokenizer than data.dir {} (xxh64 {} vs {}); prepare it "
              "with --set data.tokenizer={}/tokenizer.model (or its tokenizer.json)",
              cfg.source, src.dir, cfg.data.dir, theirs.empty() ? "none" : theirs, ours, cfg.data.dir);
    out.push_back(std::make_unique<data::PreparedSplit>(
        src.dir, "train", static_cast<std::uint64_t>(cfg.model.vocab_size), cfg.model.seq_len));
  }
  return out;
}

std::vector<data::Source> mixture_of(const Config& cfg,
                                     const std::vector<std::unique_ptr<data::PreparedSplit>>& splits) {
  const std::vector<DataSource> list = sources_of(cfg);
  std::vector<data::Source> out;
  for (std::size_t i = 0; i < splits.size(); ++i)
    out.push_back({&splits[i]->tokens(), splits[i]->masking(cfg.data.document_mask), list[i].weight, list[i].dir});
  return out;
}

// Adds the time it lives to `total`: a rank's compute inside the micro-batch schedule.
struct Busy {
  double& total;
  Clock::time_point t0 = Clock::now();
  ~Busy() { total += since(t0); }
};
}  // namespace

void request_stop(int signal) { g_stop = signal; }

struct Trainer::Loop {
  explicit Loop(State& state);
  TrainResult run();

 private:
  void begin();
  bool train_step(std::int64_t step, Metrics& metrics, Progress& progress);
  // The parts of one step.
  void zero_grads();
  void micro_batches(std::int64_t step);
  Tensor forward_micro(std::int64_t step, std::int64_t k, int chunk, const Tensor& in);
  // split: the weight gradients left for weights_micro (DualPipeV's `inputs` units).
  Tensor backward_micro(std::int64_t k, int chunk, const Tensor& dout, bool split);
  void weights_micro(std::int64_t k, int chunk);
  void count_routing(int chunk);
  void reduce(std::int64_t step);
  double global_norm();
  bool optimizer_step(std::int64_t step, double norm, Progress& progress);
  void update_router_biases();
  void update_replicas(std::int64_t step, bool applied);
  void apply_replicas();
  std::string replica_state() const;
  void restore_replicas();
  void save(std::int64_t step, double last, double val);
  void add_rank_imbalance();      // collective over ep: this rank's terms of rank_imbalance, into loads
  double rank_imbalance() const;  // the step's most loaded ep rank over the mean, mean over MoE layers
  void log_step(std::int64_t step, double norm);
  nlohmann::json step_metrics(std::int64_t step, double norm, bool applied, double val, double step_seconds);
  void log_sources(std::int64_t step, bool tokens, Progress& progress);
  std::pair<double, double> load_range() const;  // smallest and largest expert load of the step
  bool stop_requested(std::int64_t step, Progress& progress);
  // Around the steps.
  double evaluate();
  void log_model_and_layout();
  void finish();

  State& s;
  const Config& cfg;
  const TrainConfig& t;
  const ModelConfig& mc;
  Transformer& model;
  const std::int64_t dp, rank, T, mb, global_seqs, E;
  const double global_tokens;
  const bool log_rank, counts;  // counts: this rank adds its loss (tp ranks share it: one counts it)
  const PipeShape shape;        // the pipeline's (virtual) stages: model chunks on this stage
  const nlohmann::json meta;    // data.dir's meta.json
  std::vector<std::unique_ptr<data::PreparedSplit>> train_data;  // per source (data.sources)
  data::PreparedSplit val_data;                                  // data.dir's
  data::Mixture loader;
  data::Loader val_loader;
  std::vector<std::int64_t> epochs_warned;  // per source: the epoch whose start was logged
  double step_targets = 0;                  // targets the loss counts in this step's global batch (its denominator)
  std::vector<MoE*> moe_layers;
  std::vector<std::int64_t> moe_row;  // each MoE layer's row among all the model's (this stage fills its own)
  std::int64_t all_moe;
  TrainResult res;
  Plan plan;
  std::int64_t start = 0, end = 0;
  // Global expert loads per MoE layer, then dropped assignments, then the terms of
  // rank_imbalance (summed over every rank: one all-reduce).
  Tensor loads;
  std::int64_t dropped_at() const { return all_moe * std::max<std::int64_t>(E, 1); }
  // Kept rows per MoE layer and ep rank (where the dispatch sent them, replicas included),
  // summed over the ep group; and the expert loads since the redundant experts were last chosen.
  Tensor rank_rows;
  std::vector<double> loads_since_choice;
  ReplicaLayout replica_layout;
  std::vector<std::vector<std::int32_t>> replica_slots;  // per MoE layer of the model (every stage's)
  double loss = 0, last_loss = 0;
  double mtp_loss = 0, mtp_weight = 0;  // MTP: the depths' mean cross-entropy, and its weight this step
  StepGuard guard;
  FaultDrills drills;
  // The micro-batch schedule's span and the time this rank computed in it: the rest is bubble.
  double schedule_s = 0, schedule_busy = 0;
  // A micro-batch in flight: its tokens and targets, and what its forward saved for its
  // backward (the stage's input among it), held here while later micro-batches go forward.
  struct InFlight {
    data::Batch batch;
    Transformer::Saved saved;
    std::size_t bytes = 0, gemm_bytes = 0;  // of saved (SavedBytes)
  };
  std::map<std::pair<std::int64_t, int>, InFlight> flight;  // by (micro-batch, chunk)
  // Backwards whose weight gradients wait (DualPipeV), with the dy and x they hold (in
  // `held` until their weights run).
  std::map<std::pair<std::int64_t, int>, WeightGrads> waiting;  // by (micro-batch, chunk)
  std::int64_t deferred_weight_grads = 0;                       // run in weights units this step
  std::size_t held = 0, held_gemm = 0;                          // saved activations in flight now
  std::map<std::string, std::uint64_t> bytes_before;            // metrics: bytes sent up to the last step
  double prior_wall = 0, side_s0 = 0;
  double step_expert_s = 0, step_overlap_s = 0;  // the last step's (StepProfile::expert_seconds)
  Clock::time_point t0;
};

Trainer::Loop::Loop(State& state)
    : s(state),
      cfg(state.cfg),
      t(cfg.train),
      mc(cfg.model),
      model(state.model),
      dp(state.layout.dp),
      rank(state.mesh.coords().dp),
      T(mc.seq_len),
      mb(t.micro_batch),
      global_seqs(dp * t.grad_accum * mb),
      E(mc.routed_experts),
      global_tokens(double(global_seqs * T)),
      log_rank(state.world.rank() == 0),
      counts(state.mesh.coords().tp == 0),
      shape(pipe_shape(cfg, state.layout.pp)),
      meta(data_meta(cfg.data.dir)),
      train_data(open_sources(cfg)),
      val_data(cfg.data.dir, "val", static_cast<std::uint64_t>(mc.vocab_size), mc.seq_len),
      loader(mixture_of(cfg, train_data), T, static_cast<std::uint64_t>(t.seed), global_seqs),
      val_loader(val_data.tokens(), T, static_cast<std::uint64_t>(t.seed), global_seqs,
                 val_data.masking(cfg.data.document_mask)),
      epochs_warned(loader.size(), 0),
      moe_layers(model.moe_layers()),
      moe_row(model.moe_ordinals()),
      all_moe(moe::moe_layers(mc)),
      loads(Tensor::zeros({dropped_at() + 3}, DType::f64)),
      rank_rows(Tensor::zeros({all_moe * state.layout.ep}, DType::f64)),
      loads_since_choice(std::size_t(all_moe * E), 0.0),
      replica_layout(moe::replica_layout(mc, state.mesh.expert_group())),
      replica_slots(std::size_t(all_moe),
                    std::vector<std::int32_t>(std::size_t(replica_layout.ranks * replica_layout.slots), -1)),
      guard(t.spike_zscore, t.spike_window),
      drills(cfg.debug, s.world.rank()) {}  // (the guard's loss history starts afresh at each launch)

TrainResult Trainer::run() {
  if (!s_->cfg.checkpoint.dir.empty()) s_->lock_run_dir();  // one run at a time writes a run directory
  TrainResult r = Loop(*s_).run();
  s_->run_lock.reset();
  return r;
}

TrainResult Trainer::Loop::run() {
  begin();
  const auto& ck = cfg.checkpoint;
  // metrics.jsonl and TensorBoard events beside the checkpoints, from world rank 0.
  Metrics metrics = s.world.rank() == 0 && !ck.dir.empty() ? Metrics(ck.dir, start) : Metrics();
  Watchdog watchdog(t.watchdog_s, s.world, cfg.checkpoint.dir);
  Progress progress(log_rank, start, end);
  for (std::int64_t step = start; step < end; ++step) {
    watchdog.beat(step + 1);
    drills.strike(FaultDrills::Point::step_start, step);
    for (MoE* m : moe_layers) drills.strike(FaultDrills::Point::router_bias, step, &m->bias());
    if (!train_step(step, metrics, progress)) break;
  }
  progress.clear();
  finish();
  if (!res.stopped && res.steps > start) metrics.log({{"step", res.steps}, {"val_loss", res.val_loss}});
  res.wall_seconds = prior_wall + since(t0);
  if (!ck.dir.empty() && res.steps > start) {
    save(res.steps, last_loss, res.val_loss);
    res.resume.last_checkpoint = ckpt::step_file(ck.dir, res.steps);
  }
  if (!ck.dir.empty()) {  // (an asynchronous write, committed before the run ends)
    s.timed(s.ckpt_s, [&] { s.finish_pending(res.steps); });
  }
  s.finish(res);
  return res;
}

// The plan, the resume (or fine-tuning start) and the counters the steps are measured by.
void Trainer::Loop::begin() {
  log_model_and_layout();
  res.unigram_entropy = meta.value("unigram_entropy_nats", 0.0);
  if (s.cluster.calibrate) calibrate(s.cluster, s.world);  // local-cpu: measure the peak the report prices against
  plan = make_plan(cfg, s.cluster, s.layout);
  s.launch_t0 = Clock::now(), s.comm0 = s.comm_now(), s.pp0 = s.mesh.pp().seconds();
  start = s.begin(
      res, [this] { return evaluate(); }, log_rank);
  prior_wall = res.resume.prior_wall_seconds;
  restore_replicas();
  res.steps = start;
  s.reset_bytes();
  s.side_bytes.clear();
  // What the training steps allocate and multiply, against the plan (evaluation and
  // checkpoints inside the loop are timed apart and their GEMMs counted apart).
  reset_tensor_memory_peak(model.device());  // the GPU's bytes on a GPU run
  res.profile.start_tensor_bytes = double(tensor_memory(model.device()).live);
  ops::reset_gemm_flops();
  s.side_flops = 0;
  side_s0 = s.eval_s + s.ckpt_s;
  t0 = Clock::now();
  // This launch ends at train.stop_at (an interruption, as a time-limited job would have),
  // else at train.steps; the schedule always spans train.steps.
  end = t.stop_at > 0 ? std::min(t.stop_at, t.steps) : t.steps;
}

// One step, in the order a token flows; false when a stop was requested.
bool Trainer::Loop::train_step(std::int64_t step, Metrics& metrics, Progress& progress) {
  const auto step_t0 = Clock::now();
  const double expert_s0 = s.mesh.expert_seconds(), overlap_s0 = s.mesh.expert_overlap_seconds();
  mtp_weight = mtp_loss_weight(t, step);
  zero_grads();
  micro_batches(step);
  reduce(step);
  const double norm = global_norm();
  const bool applied = optimizer_step(step, norm, progress);
  if (applied) update_router_biases(), last_loss = loss;
  update_replicas(step, applied);
  res.losses.push_back(loss);
  res.grad_norms.push_back(norm);
  if (mc.mtp_depth > 0) res.mtp_losses.push_back(mtp_loss);
  res.tokens += global_tokens;
  res.steps = step + 1;
  const bool last = step + 1 == end;
  synchronize(model.device());  // a GPU runs behind the host: the step ends when its kernels have
  const double step_seconds = since(step_t0);
  step_expert_s = s.mesh.expert_seconds() - expert_s0, step_overlap_s = s.mesh.expert_overlap_seconds() - overlap_s0;
  res.profile.expert_seconds += step_expert_s, res.profile.expert_overlap_seconds += step_overlap_s;
  if (const TrafficReport traffic = device_traffic();
      step == start || traffic.total.to_host > res.traffic.step_traffic.to_host)
    res.traffic.step_traffic = traffic.total, res.traffic.step_traffic_sites = traffic.describe();
  double val = 0;
  if (t.eval_every > 0 && (step + 1) % t.eval_every == 0 && !last) {
    progress.clear();
    s.timed(s.eval_s, [&] { val = res.val_loss = evaluate(); });
    if (log_rank) spdlog::info("step {:>5} | validation loss {:.4f}", step + 1, res.val_loss);
  }
  if (log_rank && loader.size() > 1) log_sources(step, (step + 1) % t.log_every == 0 || last, progress);
  if (log_rank && ((step + 1) % t.log_every == 0 || step == start || last)) {
    progress.clear();
    log_step(step, norm);
  }
  if (metrics.enabled()) metrics.log(step_metrics(step, norm, applied, val, step_seconds));  // world rank 0
  progress.draw(step + 1, since(t0));
  if (stop_requested(step, progress)) return false;
  const auto& ck = cfg.checkpoint;
  if (ck.async) s.timed(s.ckpt_s, [&] { s.poll_pending(step + 1); });  // a write done on every rank: commit it
  if (!ck.dir.empty() && ck.every > 0 && (step + 1) % ck.every == 0 && !last && applied) {  // none from a skipped step
    progress.clear();
    res.wall_seconds = prior_wall + since(t0);
    save(step + 1, loss, val);
  }
  return true;
}

void Trainer::Loop::log_model_and_layout() {
  res.size.expert_parameters = expert_parameters(mc);  // whole model, counted (plan/counts.h); tests hold the two equal
  res.size.parameters = total_parameters(mc);
  res.size.local_dense = s.dense->numel(), res.size.local_experts = s.experts->numel();
  res.size.optimizer_bytes = s.dense->optimizer_bytes() + s.experts->optimizer_bytes();
  // Moments exist for the trained parameters alone (not for frozen ones or LoRA's base): their
  // whole count, each stage's summed over the stages.
  double trained = 0;
  for (ParamGroup* g : {s.dense.get(), s.experts.get()})
    for (const auto& span : g->spans())
      if (!span.param->tied_copy) {
        const Shape full = span.param->full_shape();
        trained += std::accumulate(full.begin(), full.end(), 1.0, std::multiplies<>());
      }
  trained = s.layout.pp > 1 ? s.mesh.pp().all_reduce_sum(trained) : trained;
  res.size.optimizer_bytes_total = 2 * sizeof(float) * static_cast<std::size_t>(trained);
  if (!log_rank) return;
  spdlog::info(
      "model: {} parameters, {} MoE layers x {} experts (top-{}); data: {}; {} ranks x {} micro-batches x {} "
      "sequences x {} tokens = {:.0f} tokens per step",
      res.size.parameters, all_moe, E, mc.top_k, train_data.front()->tokens().describe(), dp, t.grad_accum, mb, T,
      global_tokens);
  if (loader.size() > 1) {
    double total = 0;
    for (std::size_t i = 0; i < loader.size(); ++i) total += loader.source(i).weight;
    for (std::size_t i = 0; i < loader.size(); ++i)
      spdlog::info("data: source {} (weight {:g}, {:.1f}% of the sequences): {} windows of {} tokens{}",
                   loader.source(i).name, loader.source(i).weight, 100 * loader.source(i).weight / total,
                   loader.windows(i), T, train_data[i]->chat() ? ", chat" : "");
  }
  if (mc.lora.rank > 0)
    spdlog::info(
        "LoRA: rank {} (scale {:g}) on {} projections on this rank ({}): {:.0f} parameters train ({:.2f}% of {}), "
        "the rest frozen",
        mc.lora.rank, mc.lora.alpha / double(mc.lora.rank), model.adapters().size() / 2,
        fmt::join(mc.lora.targets, ", "), trained, 100.0 * trained / double(res.size.parameters), res.size.parameters);
  if (meta.value("loss_mask", false))
    spdlog::info("data: chat, loss on {} of its tokens ({}), document masking {}",
                 meta.value("target_tokens", std::uint64_t{0}), meta.value("loss_on", std::string("assistant")),
                 loader.documents() ? "on"
                                    : "off (conversations packed in a window see each other: set "
                                      "data.document_mask=true)");
  std::string stages;
  for (std::size_t i = 0; i + 1 < s.bounds.size(); ++i)
    stages += fmt::format("{}{}", i ? "/" : "", s.bounds[i + 1] - s.bounds[i]);
  spdlog::info(
      "layout: pp {} (blocks {}{}) x dp {} x tp {}, ep {} (experts {} per rank, {} replicas), zero {}: optimizer "
      "state {} on this rank of {} in all ({:.3f} of it)",
      s.layout.pp, stages,
      shape.v            ? ", DualPipeV: stage s holds chunks s and 2p-1-s"
      : shape.chunks > 1 ? ", interleaved 1F1B"
                         : "",
      dp, s.layout.tp, s.layout.ep, E / s.layout.ep, s.layout.edp(), cfg.parallel.zero,
      human_bytes(double(res.size.optimizer_bytes)), human_bytes(double(res.size.optimizer_bytes_total)),
      double(res.size.optimizer_bytes) / double(res.size.optimizer_bytes_total));
  const Layout& l = s.layout;
  if (l.ep == 1) return;
  // The node-reduced combine acts on the hierarchical dispatch's BF16 wire only: say which.
  const bool hierarchical = l.ep_nodes() > 1 && l.hierarchical;
  std::string combine;
  if (l.node_reduced)
    combine = hierarchical && cfg.precision != Precision::fp32
                  ? ", the combine summed in the node"
                  : ", parallel.node_reduced_combine has no effect (it needs the hierarchical dispatch over nodes "
                    "and a bf16 or fp8 wire)";
  spdlog::info("expert dispatch: ep {} over {} node{} of {} rank{}{}{}{}{}", l.ep, l.ep_nodes(),
               l.ep_nodes() > 1 ? "s" : "", l.ep_per_node(), l.ep_per_node() > 1 ? "s" : "",
               l.ep_nodes() > 1 ? (l.hierarchical ? ", hierarchical (once per node, forwarded inside)" : ", flat") : "",
               combine, l.overlap && mc.shared_experts > 0 ? ", overlapped with the shared experts" : "",
               l.redundant > 0 ? fmt::format(", {} replica slot{} a rank chosen every {} steps", l.redundant,
                                             l.redundant > 1 ? "s" : "", cfg.parallel.rebalance_every)
                               : "");
}

// Validation: the first eval_batches global batches of the held-out split, in order; the
// mean token cross-entropy over every rank.
double Trainer::Loop::evaluate() {
  data::Batch batch(mb, T, val_loader.masking().documents);
  for (std::int64_t b = 0; b < t.eval_batches; ++b) {
    const StageWork work{.forward =
                             [&](std::int64_t k, int c, const Tensor& in) {
                               val_loader.fill_in_order(b * global_seqs + (k * dp + rank) * mb, mb, batch);
                               Tensor out;
                               model.forward_stage(out, in, batch.tokens, batch.targets, {mb, T, batch.positions}, c);
                               return out;
                             },
                         .backward = {},
                         .activation = {mb * T, mc.d_model}};
    run_forward(s.mesh.pp(), t.grad_accum, work, shape);
  }
  const double ce = model.take_loss_sums().ce_sum;  // summed on the device: one copy for the whole evaluation
  const auto targets = static_cast<double>(std::max<std::int64_t>(val_loader.targets_in_order(t.eval_batches), 1));
  return s.world.all_reduce_sum(counts ? ce : 0.0) / targets;
}

void Trainer::Loop::zero_grads() {
  reset_device_traffic();
  s.dense->zero_grad();
  s.experts->zero_grad();
  loads.zero(), rank_rows.zero();
  loss = mtp_loss = 0;
}

// The step's micro-batches through the pipeline's schedule; the losses stay summed on the
// device until the one read at the end.
void Trainer::Loop::micro_batches(std::int64_t step) {
  const StageWork work{
      .forward = [&](std::int64_t k, int c, const Tensor& in) { return forward_micro(step, k, c, in); },
      .backward = [&](std::int64_t k, int c, const Tensor& dout) { return backward_micro(k, c, dout, false); },
      .activation = {mb * T, mc.d_model},
      .inputs = [&](std::int64_t k, int c, const Tensor& dout) { return backward_micro(k, c, dout, true); },
      .weights = [&](std::int64_t k, int c) { weights_micro(k, c); }};
  const auto sched0 = Clock::now();
  Communicator& ppc = s.mesh.pp();
  model.set_mtp_weight(mtp_weight);
  // The loss is the mean over the targets it counts: every token, or those the masks leave
  // (each rank counts the whole global batch from the data: no collective).
  step_targets = double(std::max<std::int64_t>(loader.targets(step), 1));
  deferred_weight_grads = 0;
  run_schedule(ppc, shape, stage_schedule(cfg, ppc.size(), ppc.rank(), t.grad_accum), work);
  res.profile.deferred_weight_grads = deferred_weight_grads;
  if (const auto sums = model.take_loss_sums(); counts) {  // one copy per step
    loss += sums.ce_sum / step_targets + sums.aux_sum / double(global_seqs);
    if (mc.mtp_depth > 0) {
      mtp_loss += sums.mtp_sum / (double(mc.mtp_depth) * step_targets);
      loss += mtp_weight * mtp_loss;
    }
  }
  if (s.layout.pp > 1) ppc.all_reduce_sum(0.0);  // the pipeline drains: its last stages wait here, on the pp axis
  schedule_s += since(sched0);
}

// Micro-batch k of a step on this rank is rows (k * dp + rank) * mb of the global batch;
// the first stage reads its tokens, the last its targets.
Tensor Trainer::Loop::forward_micro(std::int64_t step, std::int64_t k, int chunk, const Tensor& in) {
  const Busy busy{schedule_busy};
  InFlight f{data::Batch(mb, T, loader.documents()), {}, 0, 0};
  loader.fill(step, (k * dp + rank) * mb, mb, f.batch);  // this rank's rows of the global batch
  Tensor out;
  const Tensor& positions = f.batch.positions;
  model.forward_stage(out, in, f.batch.tokens, f.batch.targets, {mb, T, positions}, chunk);  // losses: on the device
  count_routing(chunk);
  f.saved = model.take_saved(chunk);
  SavedBytes sb;
  f.saved.count(sb);
  f.bytes = sb.total(), f.gemm_bytes = sb.gemm_inputs();
  held += f.bytes, held_gemm += f.gemm_bytes;
  if (held > res.profile.saved_bytes) res.profile.saved_bytes = held, res.profile.saved_gemm_bytes = held_gemm;
  flight[{k, chunk}] = std::move(f);
  return out;
}

// The routing statistics of the chunk's MoE layers, from their plans' counts (host values).
void Trainer::Loop::count_routing(int chunk) {
  double* ld = loads.data<double>();
  for (std::size_t i = 0; i < moe_layers.size(); ++i) {
    const MoE& m = *moe_layers[i];
    if (!model.in_chunk(moe_layers[i], chunk)) continue;
    for (std::int64_t e = 0; e < E; ++e) ld[moe_row[i] * E + e] += double(m.load()[std::size_t(e)]);
    const std::vector<std::int64_t>& rows = m.instance_rows();  // instances rank-major, instances_per_rank each
    for (std::size_t j = 0; j < rows.size(); ++j)
      rank_rows.data<double>()[moe_row[i] * s.layout.ep + std::int64_t(j) / m.instances_per_rank()] += double(rows[j]);
    ld[dropped_at()] += double(m.dropped());
    res.traffic.max_ranks_per_token = std::max(res.traffic.max_ranks_per_token, m.max_ranks_per_token());
    res.traffic.remote_rows += double(m.remote_rows());  // summed here, per step at the end
    res.traffic.remote_token_ranks += double(m.remote_token_ranks());
    res.traffic.dispatch_bytes += double(m.dispatch_bytes());
    res.traffic.inter_node_bytes += double(m.inter_node_bytes());
  }
}

Tensor Trainer::Loop::backward_micro(std::int64_t k, int chunk, const Tensor& dout, bool split) {
  const Busy busy{schedule_busy};
  InFlight& f = flight.at({k, chunk});
  const std::size_t saved = f.bytes, saved_gemm = f.gemm_bytes;
  model.restore_saved(std::move(f.saved), chunk);
  flight.erase({k, chunk});
  Tensor din;
  {
    std::optional<WeightGrads::Deferral> later;
    if (split) later.emplace(waiting[{k, chunk}]);
    model.backward_stage(din, dout, 1.0 / step_targets, 1.0 / double(global_seqs), chunk);
  }
  if (split) {  // what the queue holds stays until its weights run; at its most, beside what was saved
    const SavedBytes& q = waiting.at({k, chunk}).held();
    if (held + q.total() > res.profile.saved_bytes)
      res.profile.saved_bytes = held + q.total(), res.profile.saved_gemm_bytes = held_gemm + q.gemm_inputs();
    held += q.total(), held_gemm += q.gemm_inputs();
  }
  held -= saved, held_gemm -= saved_gemm;
  model.take_saved(chunk);  // dropped: a forward of another chunk would not overwrite it
  return din;
}

void Trainer::Loop::weights_micro(std::int64_t k, int chunk) {
  const Busy busy{schedule_busy};
  const auto it = waiting.find({k, chunk});
  MOE_CHECK(it != waiting.end(), InternalError, "pipeline: weights of micro-batch {}, chunk {} before its backward", k,
            chunk);
  WeightGrads& q = it->second;
  held -= q.held().total(), held_gemm -= q.held().gemm_inputs();
  deferred_weight_grads += std::int64_t(q.size());
  q.run();
  waiting.erase(it);
}

// Sum gradients (dense over dp, experts over their replicas); the loss and expert loads over
// every rank (parts of them live on each stage, each tp rank's tokens, each dp rank).
void Trainer::Loop::reduce(std::int64_t step) {
  // The router's gradient: each tp rank's share (its own tokens), summed over tp first.
  if (s.layout.tp > 1)
    for (Param* p : s.params)
      if (p->tp_partial && p->g.defined()) s.mesh.tp().all_reduce_sum(p->g);
  // MTP's embedding on the last stage is the first stage's too: the two gradients summed
  // (DualPipeV's first and last virtual stages share stage 0 and its one embedding).
  if (Param* embed = model.embedding(); embed && embed->g.defined() && mc.mtp_depth > 0 && s.layout.pp > 1 && !shape.v)
    s.mesh.embedding().all_reduce_sum(embed->g);
  drills.strike(FaultDrills::Point::gradients_summed, step,
                s.dense->numel() > 0 ? &s.dense->flat_grads() : &s.experts->flat_grads());
  s.dense->reduce_grads();
  for (MoE* m : moe_layers) m->fold_replica_grads();  // before the gradients are reduced over edp
  s.experts->reduce_grads();
  loss = s.world.all_reduce_sum(loss);
  if (mc.mtp_depth > 0) mtp_loss = s.world.all_reduce_sum(mtp_loss);
  add_rank_imbalance();
  s.world.all_reduce_sum(loads);
  res.dropped += loads.data<double>()[dropped_at()];
  res.rank_imbalance.push_back(rank_imbalance());
}

// Dense gradients are replicated over dp and split over tp (the tensors every tp rank holds
// counted once); expert gradients differ between ep ranks and are replicated over edp; each
// stage holds its own layers.
double Trainer::Loop::global_norm() {
  // (a tied copy counted where the other is)
  const auto share = [&](const Param& p) { return p.tied_copy ? 0 : p.tp_replicated ? 1.0 / s.layout.tp : 1.0; };
  const bool tied = model.embedding() && model.embedding()->tied_copy;
  double sq = s.layout.tp > 1 || tied ? s.dense->grad_sq_norm(share) : s.dense->grad_sq_norm();
  if (s.layout.tp > 1) sq = s.mesh.tp().all_reduce_sum(sq);
  double sq_experts = s.experts->grad_sq_norm();
  if (s.layout.ep > 1) sq_experts = s.ep().all_reduce_sum(sq_experts);
  return std::sqrt(s.layout.pp > 1 ? s.mesh.pp().all_reduce_sum(sq + sq_experts) : sq + sq_experts);
}

// Clip and AdamW, unless the step is non-finite or spikes: then it changes nothing (weights,
// moments, router biases), and too many in a row end the run before anything is saved from them.
bool Trainer::Loop::optimizer_step(std::int64_t step, double norm, Progress& progress) {
  const double spike_at = guard.threshold();
  const auto verdict = guard.check(loss, norm);
  if (verdict == StepGuard::Verdict::apply) {
    if (t.grad_clip > 0 && norm > t.grad_clip) {
      s.dense->scale_grads(t.grad_clip / norm);
      s.experts->scale_grads(t.grad_clip / norm);
    }
    const ops::AdamWSpec spec{
        .lr = learning_rate(t, step), .beta1 = t.beta1, .beta2 = t.beta2, .eps = t.adam_eps, .step = step + 1};
    s.dense->step(spec, t.weight_decay);
    s.experts->step(spec, t.weight_decay);
    return true;
  }
  res.skipped_steps = guard.skipped();
  const std::string why = verdict == StepGuard::Verdict::nonfinite
                              ? fmt::format("loss {} and gradient norm {}", loss, norm)
                              : fmt::format("loss {:.4f} spikes above {:.4f} (train.spike_zscore)", loss, spike_at);
  progress.clear();
  if (log_rank)
    spdlog::warn("step {} skipped: {}; {} in a row, {} in all", step + 1, why, guard.consecutive(), guard.skipped());
  const auto& ck = cfg.checkpoint;
  // (every rank decides alike: an asynchronous write still pending is committed first)
  if (guard.consecutive() >= t.max_skipped_steps) s.timed(s.ckpt_s, [&] { s.finish_pending(step); });
  MOE_CHECK(guard.consecutive() < t.max_skipped_steps, TrainingError,
            "{}: step {}: {} steps in a row skipped (train.max_skipped_steps), the last with {}; stopping without "
            "saving. {}; lower train.lr, or raise train.max_skipped_steps",
            cfg.source, step + 1, guard.consecutive(), why,
            ck.dir.empty() ? "No checkpoint was kept (checkpoint.dir is empty)"
                           : fmt::format("The last checkpoint in {} is intact and resumes the run", ck.dir));
  return false;
}

// Auxiliary-loss-free balancing: every rank applies the same global loads. Under LoRA the
// biases are part of the frozen base (an adapter is applied to the base it was trained on:
// routing that moved would not be the published model's).
void Trainer::Loop::update_router_biases() {
  if (mc.lora.rank > 0) return;
  const double* ld = loads.data<double>();
  for (std::size_t i = 0; i < moe_layers.size(); ++i) {
    const double* row = ld + moe_row[i] * E;
    moe_layers[i]->update_bias(std::vector<double>(row, row + E), mc.bias_update_rate);
  }
}

// Redundant experts: replicas copy their owners' weights after every update, and are chosen
// again every parallel.rebalance_every steps from the loads since the last choice (the same
// on every rank: the loads are global sums of counts).
void Trainer::Loop::update_replicas(std::int64_t step, bool applied) {
  if (cfg.parallel.redundant_experts == 0) return;
  const double* ld = loads.data<double>();
  for (std::size_t i = 0; i < loads_since_choice.size(); ++i) loads_since_choice[i] += ld[i];
  if ((step + 1) % cfg.parallel.rebalance_every != 0) {
    if (applied)
      for (MoE* m : moe_layers) m->refresh_replicas();
    return;
  }
  // Every layer's choice on every rank (a checkpoint records them all), each stage's applied.
  for (std::int64_t i = 0; i < all_moe; ++i) {
    const auto first = loads_since_choice.begin() + i * E;
    replica_slots[std::size_t(i)] = choose_replicas(replica_layout, std::vector<double>(first, first + E));
  }
  std::fill(loads_since_choice.begin(), loads_since_choice.end(), 0.0);
  apply_replicas();
}

void Trainer::Loop::apply_replicas() {
  for (std::size_t i = 0; i < moe_layers.size(); ++i)
    moe_layers[i]->set_replicas(replica_slots[std::size_t(moe_row[i])]);  // (and the weights copied)
}

// The choice and the loads since, for the checkpoint: a resumed run picks the same instances.
std::string Trainer::Loop::replica_state() const {
  if (cfg.parallel.redundant_experts == 0) return "";
  const ReplicaLayout& l = replica_layout;
  return nlohmann::json{{"experts", l.experts},
                        {"ranks", l.ranks},
                        {"slots", l.slots},
                        {"ranks_per_node", l.ranks_per_node},
                        {"slot_experts", replica_slots},
                        {"loads_since_choice", loads_since_choice}}
      .dump();
}

// A checkpoint's choice where its layout is this run's; else the slots stay empty until the
// next choice (training is the same either way, to the order of the weight-gradient sums).
void Trainer::Loop::restore_replicas() {
  if (cfg.parallel.redundant_experts == 0 || s.replicas.empty()) return;
  const auto j = nlohmann::json::parse(s.replicas);
  const ReplicaLayout& l = replica_layout;
  const bool same = j.at("experts") == l.experts && j.at("ranks") == l.ranks && j.at("slots") == l.slots &&
                    j.at("ranks_per_node") == l.ranks_per_node && j.at("slot_experts").size() == replica_slots.size();
  if (!same) {
    if (log_rank) spdlog::info("redundant experts: the checkpoint chose for another layout; choosing afresh");
    return;
  }
  replica_slots = j.at("slot_experts").get<std::vector<std::vector<std::int32_t>>>();
  loads_since_choice = j.at("loads_since_choice").get<std::vector<double>>();
  apply_replicas();
}

void Trainer::Loop::save(std::int64_t step, double last, double val) {
  s.replicas = replica_state();
  s.timed(s.ckpt_s, [&] { s.save(step, res, last, val); });
}

// Each ep group dispatches on its own: its rows summed over its ranks (one all-reduce over ep),
// max over mean per layer of this stage, added with their count to the loads' last two slots;
// the loads' world all-reduce then makes the mean over every rank's layers (a group's ranks
// agree; groups and stages weigh alike).
void Trainer::Loop::add_rank_imbalance() {
  const std::int64_t P = s.layout.ep;
  if (P == 1 || all_moe == 0) return;
  s.mesh.ep().all_reduce_sum(rank_rows);
  const double* rr = rank_rows.data<double>();
  double* sums = loads.data<double>() + dropped_at() + 1;  // this rank's layers' max/mean, and their count
  for (const std::int64_t i : moe_row) {
    const double total = std::accumulate(rr + i * P, rr + (i + 1) * P, 0.0);
    sums[0] += total > 0 ? *std::max_element(rr + i * P, rr + (i + 1) * P) * double(P) / total : 1.0;
    sums[1] += 1;
  }
}

double Trainer::Loop::rank_imbalance() const {
  const double* sums = loads.data<double>() + dropped_at() + 1;
  return sums[1] > 0 ? sums[0] / sums[1] : 1.0;
}

std::pair<double, double> Trainer::Loop::load_range() const {
  const double* ld = loads.data<double>();
  double lmin = 0, lmax = 0;
  for (std::int64_t i = 0; i < all_moe; ++i) {
    const auto [lo, hi] = std::minmax_element(ld + i * E, ld + (i + 1) * E);
    lmin = i == 0 ? *lo : std::min(lmin, *lo);
    lmax = std::max(lmax, *hi);
  }
  return {lmin, lmax};
}

// A mixture's tokens per source so far (with the step's log line), and a line when a source
// starts over (its windows all seen: it repeats from here, in a new order).
void Trainer::Loop::log_sources(std::int64_t step, bool tokens, Progress& progress) {
  std::string line;
  for (std::size_t i = 0; i < loader.size(); ++i) {
    const std::int64_t drawn = loader.drawn(i, step + 1), epoch = drawn / loader.windows(i);
    line += fmt::format("{}{} {}", line.empty() ? "" : ", ", loader.source(i).name, double(drawn * T));
    if (epoch <= epochs_warned[i]) continue;
    epochs_warned[i] = epoch;
    progress.clear();
    spdlog::warn("data: source {} has given all its {} windows by step {}: epoch {} begins (it repeats)",
                 loader.source(i).name, loader.windows(i), step + 1, epoch + 1);
  }
  if (!tokens) return;
  progress.clear();
  spdlog::info("step {:>5} | tokens per source: {}", step + 1, line);
}

void Trainer::Loop::log_step(std::int64_t step, double norm) {
  const std::int64_t done = step + 1 - start;  // steps of this segment of the run
  const double secs = since(t0), mean = global_tokens * double(mc.top_k) / double(std::max<std::int64_t>(E, 1));
  const auto [lmin, lmax] = load_range();
  std::string comm;
  for (const auto& [kind, bytes] : s.step_bytes())
    comm += fmt::format("{}{} {}", comm.empty() ? "" : ", ", kind, human_bytes(double(bytes) / double(done)));
  if (s.layout.ep > 1)  // this step's expert exchanges: time inside them, time computed while they travelled
    comm +=
        fmt::format(" (expert exchanges {:.1f} ms, {:.1f} ms overlapped)", 1e3 * step_expert_s, 1e3 * step_overlap_s);
  spdlog::info(
      "step {:>5}/{} | loss {:.4f}{} | lr {:.2e} | grad norm {:.3f} | {:.0f} tokens/s | tokens per expert "
      "min/mean/max {:.0f}/{:.0f}/{:.0f} | dropped {:.0f} | sent per step: {} | saved activations {} "
      "(GEMM inputs {} in {}){} | {:.1f} s",
      step + 1, t.steps, loss,
      mc.mtp_depth > 0 ? fmt::format(" (mtp {:.4f} x {:.2f})", mtp_loss, mtp_weight) : std::string(),
      learning_rate(t, step), norm, double(done) * global_tokens / secs, lmin, mean, lmax,
      loads.data<double>()[dropped_at()], comm.empty() ? "none" : comm, human_bytes(double(res.profile.saved_bytes)),
      human_bytes(double(res.profile.saved_gemm_bytes)), precision_name(cfg.precision),
      guard.skipped() ? fmt::format(" | skipped {}", guard.skipped()) : "", secs);
}

nlohmann::json Trainer::Loop::step_metrics(std::int64_t step, double norm, bool applied, double val,
                                           double step_seconds) {
  const double* ld = loads.data<double>();
  const double peak_flops = s.cluster.peak_tflops(cfg.precision) * 1e12;
  nlohmann::json r = {{"step", step + 1},
                      {"loss", loss},
                      {"lr", learning_rate(t, step)},
                      {"grad_norm", norm},
                      {"tokens_per_s", global_tokens / step_seconds},
                      {"mfu", plan.flops_per_step / step_seconds / double(s.world.size()) / peak_flops},
                      {"dropped", ld[dropped_at()]},
                      {"expert_rank_imbalance", res.rank_imbalance.back()},
                      {"expert_comm_s", step_expert_s},
                      {"expert_overlap_s", step_overlap_s},
                      {"saved_bytes", res.profile.saved_bytes},
                      {"saved_gemm_bytes", res.profile.saved_gemm_bytes},
                      {"skipped", !applied},
                      {"skipped_total", guard.skipped()},
                      {"elapsed_s", prior_wall + since(t0)}};
  if (val > 0) r["val_loss"] = val;
  if (mc.mtp_depth > 0) r["mtp_loss"] = mtp_loss, r["mtp_loss_weight"] = mtp_weight;
  if (loader.size() > 1)
    for (std::size_t i = 0; i < loader.size(); ++i)
      r["source_tokens"][loader.source(i).name] = double(loader.drawn(i, step + 1) * T);
  for (const auto& [kind, bytes] : s.step_bytes()) {
    r["bytes"][kind] = bytes - (bytes_before.count(kind) ? bytes_before.at(kind) : 0);
    bytes_before[kind] = bytes;
  }
  for (std::int64_t i = 0; i < all_moe; ++i)
    r["expert_loads"].push_back(std::vector<double>(ld + i * E, ld + (i + 1) * E));
  return r;
}

// A stop request on any rank stops every rank after this step (one scalar all-reduce).
bool Trainer::Loop::stop_requested(std::int64_t step, Progress& progress) {
  if (s.world.all_reduce_sum(double(g_stop)) == 0) return false;
  progress.clear();
  res.stopped = true;
  res.stop_signal = g_stop == SIGINT ? "SIGINT" : "SIGTERM";  // (a rank that got none: its peers had SIGTERM)
  if (log_rank)
    spdlog::info("stop requested ({}): ending after step {}{}", res.stop_signal, step + 1,
                 cfg.checkpoint.dir.empty() ? " without a checkpoint (checkpoint.dir is empty)" : ", checkpointed");
  return true;
}

// This launch's measurements per training step (validation and checkpoint traffic left
// out), against the plan; then the final validation.
void Trainer::Loop::finish() {
  const std::int64_t ran = std::max<std::int64_t>(1, res.steps - start);
  res.profile.step_seconds = (since(t0) - (s.eval_s + s.ckpt_s - side_s0)) / double(ran);
  res.profile.peak_tensor_bytes = double(tensor_memory(model.device()).peak);
  res.profile.gemm_flops_per_step = s.world.all_reduce_sum(double(ops::gemm_flops() - s.side_flops)) / double(ran);
  res.profile.planned_step_seconds = plan.time.step();
  res.profile.planned_memory_bytes = plan.memory.total();
  res.profile.planned_step_memory_bytes = plan.memory.activations + plan.memory.workspace + plan.memory.buffers;
  res.profile.planned_flops_per_step = plan.gemm_flops_per_step;
  for (const auto& [kind, bytes] : s.step_bytes())
    res.traffic.bytes_per_step[kind] = bytes / static_cast<std::uint64_t>(ran);
  res.traffic.remote_rows /= double(ran), res.traffic.remote_token_ranks /= double(ran),
      res.traffic.dispatch_bytes /= double(ran), res.traffic.inter_node_bytes /= double(ran);
  res.profile.expert_seconds /= double(ran), res.profile.expert_overlap_seconds /= double(ran);
  // The pipeline's idle share of its schedule, mean over ranks, against 1F1B's ideal.
  res.profile.bubble = s.world.all_reduce_sum(schedule_s > 0 ? 1 - schedule_busy / schedule_s : 0) / s.world.size();
  res.profile.ideal_bubble =
      shape.v ? dualpipev_bubble_fraction(s.layout.pp, t.grad_accum, false, cfg.parallel.split_weight_grads)
              : bubble_fraction(s.layout.pp, t.grad_accum, shape.chunks);
  if (!res.stopped)
    s.timed(s.eval_s, [&] { res.val_loss = evaluate(); });  // a stopped job is short of time: save first
}

}  // namespace moe
