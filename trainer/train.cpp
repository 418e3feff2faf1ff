#include "trainer/train.h"

#include <fnmatch.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "checkpoint/store.h"
#include "data/loader.h"
#include "kernels/ops.h"
#include "plan/counts.h"
#include "plan/plan.h"
#include "comm/pipeline.h"
#include "trainer/metrics.h"
#include "trainer/progress.h"
#include "trainer/step_guard.h"
#include "trainer/trainer_state.h"
#include "trainer/watchdog.h"

namespace moe {
namespace {
volatile std::sig_atomic_t g_stop = 0;
}  // namespace

void request_stop(int signal) { g_stop = signal; }

Layout trainable_layout(const Config& cfg, int world_size) {
  MOE_CHECK(cfg.model.attention == AttentionType::gqa, ConfigError,
            "{}: model.attention: mla is understood by `moe plan` (parameters, FLOPs, memory, time) but not trained "
            "yet; train with attention: gqa",
            cfg.source);
  const Layout layout = resolve_layout(cfg, world_size);
  if (cfg.device == DeviceKind::cuda) {
    MOE_CHECK(built_with_cuda(), ConfigError, "{}: device: cuda, but this moe was built without CUDA; set device: cpu",
              cfg.source);
    MOE_CHECK(cuda_device_count() > 0, ConfigError,
              "{}: device: cuda, but no GPU is visible (driver, CUDA_VISIBLE_DEVICES); set device: cpu", cfg.source);
  }
  MOE_CHECK(cfg.device == DeviceKind::cpu || layout.tp == 1, ConfigError,
            "{}: device: {} trains with parallel.tp: 1 so far (the vocabulary-parallel loss runs on the host)",
            cfg.source, device_name(device_of(cfg.device)));
  return layout;
}

namespace {

void poison(Tensor& g) {  // element 0 := NaN, on whichever device g lives
  Tensor nan = Tensor::empty({1}, DType::f32);
  nan.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  g.view({g.numel()}).rows(0, 1).copy_from(nan);
}

double unigram_entropy(const std::string& dir) {
  std::ifstream in(std::filesystem::path(dir) / "meta.json");
  if (!in) return 0;
  return nlohmann::json::parse(in, nullptr, false).value("unigram_entropy_nats", 0.0);
}

}  // namespace

double learning_rate(const TrainConfig& t, std::int64_t step) {
  if (step < t.warmup_steps) return t.lr * double(step + 1) / double(t.warmup_steps);
  const double span = double(std::max<std::int64_t>(1, t.steps - t.warmup_steps));
  const double p = std::min(1.0, double(step - t.warmup_steps) / span);  // progress after warm-up
  switch (t.lr_schedule) {
    case LrSchedule::constant: return t.lr;
    case LrSchedule::linear: return t.lr + (t.min_lr - t.lr) * p;
    case LrSchedule::cosine: return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + std::cos(M_PI * p));
    case LrSchedule::wsd: {
      const double q = t.decay_fraction > 0 ? std::clamp((p - (1 - t.decay_fraction)) / t.decay_fraction, 0.0, 1.0) : 0.0;
      return t.lr + (t.min_lr - t.lr) * q;
    }
  }
  return t.lr;
}

Trainer::Trainer(const Config& cfg, MpiCommunicator& world) : s_(std::make_unique<State>(cfg, world)) {
  auto& s = *s_;
  s.cluster = load_cluster(cfg);
  s.model.init(static_cast<std::uint64_t>(cfg.train.seed));  // same values whatever the layout
  // A GPU run (its GPU chosen by device_comms): the model and its optimizer groups live there.
  // A sim run: the same, on the simulated GPU (kernels/device.h).
  if (cfg.device != DeviceKind::cpu) s.model.to(device_of(cfg.device));
  s.model.set_recompute(cfg.train.recompute);
  s.params = s.model.params();
  ParamList dense, experts;
  for (Param* p : s.params) (p->is_expert() ? experts : dense).push_back(p);
  const auto bucket = static_cast<std::size_t>(cfg.parallel.bucket_mb * (1 << 20));
  const int zero = static_cast<int>(cfg.parallel.zero);
  s.dense = std::make_unique<ParamGroup>(dense, s.dp(), zero, bucket);
  s.experts = std::make_unique<ParamGroup>(experts, s.edp(), zero, bucket);
  // train.freeze: every pattern must name something, or a typo would train what it meant to keep.
  // A pipeline stage holds some of the parameters: "something" is counted over the stages, so
  // every rank reaches the same verdict (one that throws alone would leave the others waiting).
  const auto& patterns = cfg.train.freeze;
  for (const std::string& pat : patterns) {
    const bool here = std::any_of(s.params.begin(), s.params.end(),
                                  [&](const Param* p) { return fnmatch(pat.c_str(), p->name.c_str(), 0) == 0; });
    const bool any = s.mesh.pp().all_reduce_sum(here ? 1.0 : 0.0) > 0;
    MOE_CHECK(any, ConfigError, "{}: train.freeze: pattern '{}' matches no parameter (names as in `moe ckpt inspect`)",
              cfg.source, pat);
  }
  const auto frozen = [&](const std::string& name) {
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& pat) { return fnmatch(pat.c_str(), name.c_str(), 0) == 0; });
  };
  for (ParamGroup* g : s.groups()) g->freeze(frozen);
}

Trainer::~Trainer() = default;

std::map<std::string, Tensor> Trainer::gather_weights(bool optimizer) {
  auto& s = *s_;
  std::map<std::string, Tensor> out;
  // One tensor at full shape from this rank's part (tp shards and experts gathered).
  auto full = [&](const Param& p, const Tensor& mine) {
    Tensor t = mine.to(Device::cpu);
    if (p.is_split()) {  // every tp rank's shard, put at its place
      Tensor all = Tensor::empty({s.layout.tp * mine.numel()}, DType::f32), whole = Tensor::empty(p.full_shape(), DType::f32);
      s.mesh.tp().all_gather(all, mine.view({mine.numel()}));
      const std::int64_t extent = mine.size(p.split_dim);
      for (int r = 0; r < s.layout.tp; ++r)
        put_shard(whole, all.rows(r * mine.numel(), mine.numel()).view(mine.shape()), p.split_dim, r * extent);
      t = whole;
    }
    if (p.is_expert() && s.layout.ep > 1) {
      Tensor whole = Tensor::empty(p.full_shape(), DType::f32);
      s.mesh.ep().all_gather(whole, mine);
      t = whole;
    }
    return t;
  };
  for (ParamGroup* g : s.groups()) {
    for (const auto& span : g->spans()) out.emplace(span.param->name, full(*span.param, span.param->w));
    if (!optimizer) continue;
    const Tensor m = g->gather_moment(g->exp_avg()), v = g->gather_moment(g->exp_avg_sq());
    for (const auto& span : g->spans()) {
      const Shape& shape = span.param->w.shape();
      out.emplace("exp_avg/" + span.param->name, full(*span.param, m.rows(span.begin, span.size).view(shape)));
      out.emplace("exp_avg_sq/" + span.param->name, full(*span.param, v.rows(span.begin, span.size).view(shape)));
    }
  }
  for (MoE* m : s.model.moe_layers()) out.emplace(m->bias_name(), m->bias().to(Device::cpu));
  if (s.layout.pp == 1) return out;
  // Every stage's tensors on every rank: names and shapes, then the values, from each stage.
  std::vector<ckpt::Dataset> mine;
  for (const auto& [name, t] : out) mine.push_back({name, t.shape()});
  std::map<std::string, Tensor> all;
  for (int stage = 0; stage < s.layout.pp; ++stage)
    for (const auto& d : s.stage_list(mine, stage)) {
      Tensor t = stage == s.mesh.coords().pp ? out.at(d.name) : Tensor::empty(d.shape, DType::f32);
      s.mesh.pp().broadcast(t, stage);
      all.emplace(d.name, t);
    }
  return all;
}

std::string Trainer::save_checkpoint(std::int64_t step) {
  s_->save(step, TrainResult{}, 0, 0);
  return ckpt::step_file(s_->cfg.checkpoint.dir, step);
}

void Trainer::load_checkpoint(const std::string& path) { s_->load(path, CheckpointPart::all); }

std::size_t Trainer::checkpoint_bytes_written() {
  std::size_t n = 0;
  const bool tp_lead = s_->mesh.coords().tp == 0;
  for (const auto& sl : plan_write(s_->groups(), s_->model, tp_lead, tp_lead && s_->mesh.coords().dp == 0).slices)
    n += static_cast<std::size_t>(sl.end - sl.begin) * sizeof(float);
  return n;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> Trainer::checkpoint_read_extents(const std::string& path) {
  const CheckpointPlan plan = plan_read(s_->groups(), s_->model, CheckpointPart::all);
  return ckpt::read_extents(path, plan.datasets, plan.slices);
}

TrainResult Trainer::run() {
  auto& s = *s_;
  const Config& cfg = s.cfg;
  const auto& t = cfg.train;
  const auto& mc = cfg.model;
  Transformer& model = s.model;
  const std::int64_t dp = s.layout.dp, rank = s.mesh.coords().dp, T = mc.seq_len, mb = t.micro_batch;
  const bool log_rank = s.world.rank() == 0;
  const auto tp_share = [&](const Param& p) { return p.tp_replicated ? 1.0 / s.layout.tp : 1.0; };
  const std::int64_t global_seqs = dp * t.grad_accum * mb;
  const double global_tokens = double(global_seqs * T);

  const data::TokenStream train_stream(cfg.data.dir, "train", static_cast<std::uint64_t>(mc.vocab_size));
  const data::TokenStream val_stream(cfg.data.dir, "val", static_cast<std::uint64_t>(mc.vocab_size));
  data::Loader loader(train_stream, T, static_cast<std::uint64_t>(t.seed), global_seqs);
  const data::Loader val_loader(val_stream, T, static_cast<std::uint64_t>(t.seed), global_seqs);

  const auto moe_layers = model.moe_layers();
  const std::int64_t E = mc.routed_experts;
  TrainResult res;
  res.expert_parameters = expert_parameters(mc);  // whole model, counted (plan/counts.h); tests hold the two equal
  res.parameters = total_parameters(mc);
  res.local_dense = s.dense->numel(), res.local_experts = s.experts->numel();
  res.optimizer_bytes = s.dense->optimizer_bytes() + s.experts->optimizer_bytes();
  res.optimizer_bytes_total = 2 * sizeof(float) * static_cast<std::size_t>(res.parameters);
  if (log_rank) {
    spdlog::info("model: {} parameters, {} MoE layers x {} experts (top-{}); data: {}; {} ranks x {} micro-batches x {} "
                 "sequences x {} tokens = {:.0f} tokens per step",
                 res.parameters, moe::moe_layers(mc), E, mc.top_k,
                 train_stream.describe(), dp, t.grad_accum, mb, T, global_tokens);
    std::string stages;
    for (std::size_t i = 0; i + 1 < s.bounds.size(); ++i)
      stages += fmt::format("{}{}", i ? "/" : "", s.bounds[i + 1] - s.bounds[i]);
    spdlog::info("layout: pp {} (blocks {}) x dp {} x tp {}, ep {} (experts {} per rank, {} replicas), zero {}: optimizer "
                 "state {} on this rank of {} in all ({:.3f} of it)",
                 s.layout.pp, stages, dp, s.layout.tp, s.layout.ep, E / s.layout.ep, s.layout.edp(), cfg.parallel.zero,
                 human_bytes(double(res.optimizer_bytes)),
                 human_bytes(double(res.optimizer_bytes_total)), double(res.optimizer_bytes) / double(res.optimizer_bytes_total));
  }

  // Micro-batch i of a step on this rank is rows (i * dp + rank) * mb of the global batch;
  // the first stage reads its tokens, the last its targets.
  Communicator& ppc = s.mesh.pp();
  const bool counts = s.mesh.coords().tp == 0;  // tp ranks share the loss: one counts it
  const int chunks = model.chunks();              // interleaved pipeline: model chunks on this stage
  const Shape activation{mb * T, mc.d_model};
  Tensor tok = Tensor::empty({mb * T}, DType::i32), tgt = Tensor::empty({mb * T}, DType::i32);
  // Validation: the first eval_batches global batches of the held-out split, in order.
  auto evaluate = [&] {
    for (std::int64_t b = 0; b < t.eval_batches; ++b) {
      const StageWork work{.forward = [&](std::int64_t k, int c, const Tensor& in) {
                             val_loader.fill_in_order(b * global_seqs + (k * dp + rank) * mb, mb, tok, tgt);
                             Tensor out;
                             model.forward_stage(out, model.has_embedding(c) ? tok : in, tgt, mb, T, c);
                             return out;
                           },
                           .backward = {},
                           .activation = activation};
      run_forward(ppc, t.grad_accum, work, chunks);
    }
    const double ce = model.take_loss_sums().ce_sum;  // summed on the device: one copy for the whole evaluation
    return s.world.all_reduce_sum(counts ? ce : 0.0) / (global_tokens * double(t.eval_batches));
  };

  res.unigram_entropy = unigram_entropy(cfg.data.dir);
  if (s.cluster.calibrate) calibrate(s.cluster, s.world);  // local-cpu: measure the peak the report prices against
  const Plan plan = make_plan(cfg, s.cluster, s.layout);
  s.launch_t0 = Clock::now(), s.comm0 = s.comm_now(), s.pp0 = s.mesh.pp().seconds();
  const std::int64_t start = s.begin(res, evaluate, log_rank);
  const double prior_wall = res.prior_wall_seconds;
  const auto& ck = cfg.checkpoint;
  res.steps = start;
  double last_loss = 0;
  StepGuard guard(t.spike_zscore, t.spike_window);  // (its loss history starts afresh at each launch)
  // Global expert loads per MoE layer, then dropped assignments (summed over dp).
  // Rows of every MoE layer of the model (this stage fills its own, at their ordinals).
  const std::int64_t all_moe = moe::moe_layers(mc);
  const std::vector<std::int64_t> moe_row = model.moe_ordinals();
  Tensor loads = Tensor::zeros({all_moe * std::max<std::int64_t>(E, 1) + 1}, DType::f64);
  // The micro-batch schedule's span and the time this rank computed in it: the rest is bubble.
  double schedule_s = 0, schedule_busy = 0;
  struct Busy {
    double& total;
    Clock::time_point t0 = Clock::now();
    ~Busy() { total += since(t0); }
  };
  s.reset_bytes();
  s.side_bytes.clear();
  // What the training steps allocate and multiply, against the plan (evaluation and
  // checkpoints inside the loop are timed apart and their GEMMs counted apart).
  reset_tensor_memory_peak(model.device());  // the GPU's bytes on a GPU run
  res.start_tensor_bytes = double(tensor_memory(model.device()).live);
  ops::reset_gemm_flops();
  s.side_flops = 0;
  const double side_s0 = s.eval_s + s.ckpt_s;
  const auto t0 = Clock::now();
  // This launch ends at train.stop_at (an interruption, as a time-limited job would have),
  // else at train.steps; the schedule always spans train.steps.
  const std::int64_t end = t.stop_at > 0 ? std::min(t.stop_at, t.steps) : t.steps;
  // metrics.jsonl and TensorBoard events beside the checkpoints, from world rank 0.
  Metrics metrics = s.world.rank() == 0 && !ck.dir.empty() ? Metrics(ck.dir, start) : Metrics();
  std::map<std::string, std::uint64_t> bytes_before;
  const double peak_flops = s.cluster.peak_tflops(cfg.precision) * 1e12;
  Watchdog watchdog(t.watchdog_s, s.world.rank());
  Progress progress(log_rank, start, end);
  for (std::int64_t step = start; step < end; ++step) {
    watchdog.beat(step + 1);
    if (cfg.debug.hang_at_step == step + 1 && cfg.debug.hang_rank == s.world.rank())
      std::this_thread::sleep_for(std::chrono::hours(1));  // fault drill: the watchdog must end the job
    const auto step_t0 = Clock::now();
    reset_device_traffic();
    s.dense->zero_grad();
    s.experts->zero_grad();
    loads.zero();
    double loss = 0;
    double* ld = loads.data<double>();
    // A micro-batch in flight: its tokens and targets, and what its forward saved for its
    // backward (the stage's input among it), held here while later micro-batches go forward.
    struct InFlight {
      Tensor tok, tgt;
      Transformer::Saved saved;
      std::size_t bytes = 0, gemm_bytes = 0;  // of saved (SavedBytes)
    };
    std::map<std::pair<std::int64_t, int>, InFlight> flight;  // by (micro-batch, chunk)
    std::size_t held = 0, held_gemm = 0;  // saved activations in flight now
    const StageWork work{
        .forward = [&](std::int64_t k, int c, const Tensor& in) {
          const Busy busy(schedule_busy);
          InFlight f{Tensor::empty({mb * T}, DType::i32), Tensor::empty({mb * T}, DType::i32), {}, 0, 0};
          loader.fill(step, (k * dp + rank) * mb, mb, f.tok, f.tgt);  // this rank's rows of the global batch
          Tensor out;
          model.forward_stage(out, model.has_embedding(c) ? f.tok : in, f.tgt, mb, T, c);  // losses: summed on the device
          for (std::size_t i = 0; i < moe_layers.size(); ++i) {
            if (!model.in_chunk(moe_layers[i], c)) continue;
            const std::int64_t g = moe_row[i];
            for (std::int64_t e = 0; e < E; ++e) ld[g * E + e] += double(moe_layers[i]->load()[std::size_t(e)]);
            ld[loads.numel() - 1] += double(moe_layers[i]->dropped());
            res.max_ranks_per_token = std::max(res.max_ranks_per_token, moe_layers[i]->max_ranks_per_token());
            res.remote_rows += double(moe_layers[i]->remote_rows());  // summed here, per step at the end
            res.remote_token_ranks += double(moe_layers[i]->remote_token_ranks());
            res.dispatch_bytes += double(moe_layers[i]->dispatch_bytes());
          }
          f.saved = model.take_saved(c);
          SavedBytes sb;
          f.saved.count(sb);
          f.bytes = sb.total(), f.gemm_bytes = sb.gemm_inputs();
          held += f.bytes, held_gemm += f.gemm_bytes;
          if (held > res.saved_bytes) res.saved_bytes = held, res.saved_gemm_bytes = held_gemm;
          flight[{k, c}] = std::move(f);
          return out;
        },
        .backward = [&](std::int64_t k, int c, const Tensor& dout) {
          const Busy busy(schedule_busy);
          held -= flight.at({k, c}).bytes, held_gemm -= flight.at({k, c}).gemm_bytes;
          model.restore_saved(std::move(flight.at({k, c}).saved), c);
          flight.erase({k, c});
          Tensor din;
          model.backward_stage(din, dout, 1.0 / global_tokens, 1.0 / double(global_seqs), c);
          model.take_saved(c);  // dropped: a forward of another chunk would not overwrite it
          return din;
        },
        .activation = activation};
    const auto sched0 = Clock::now();
    run_1f1b(ppc, t.grad_accum, work, chunks);
    if (const auto sums = model.take_loss_sums(); counts)  // one copy per step
      loss += sums.ce_sum / global_tokens + sums.aux_sum / double(global_seqs);
    if (s.layout.pp > 1) ppc.all_reduce_sum(0.0);  // the pipeline drains: its last stages wait here, on the pp axis
    schedule_s += since(sched0);
    // The router's gradient: each tp rank's share (its own tokens), summed over tp first.
    if (s.layout.tp > 1)
      for (Param* p : s.params)
        if (p->tp_partial) s.mesh.tp().all_reduce_sum(p->g);
    const auto& dbg = cfg.debug;  // fault drill: one rank's NaN reaches every rank through the reduction
    if (dbg.nan_at_step > 0 && step + 1 >= dbg.nan_at_step && step + 1 < dbg.nan_at_step + dbg.nan_steps &&
        s.world.rank() == 0)
      poison(s.params.back()->g);
    // Sum gradients (dense over dp, experts over their replicas); the loss and expert loads
    // over every rank (parts of them live on each stage, each tp rank's tokens, each dp rank).
    s.dense->reduce_grads();
    s.experts->reduce_grads();
    loss = s.world.all_reduce_sum(loss);
    s.world.all_reduce_sum(loads);

    // Global norm: dense gradients are replicated over dp and split over tp (the tensors
    // every tp rank holds counted once); expert gradients differ between ep ranks and are
    // replicated over edp; each stage holds its own layers.
    double sq = s.layout.tp > 1 ? s.mesh.tp().all_reduce_sum(s.dense->grad_sq_norm(tp_share)) : s.dense->grad_sq_norm();
    double sq_experts = s.experts->grad_sq_norm();
    if (s.layout.ep > 1) sq_experts = s.ep().all_reduce_sum(sq_experts);
    const double norm = std::sqrt(s.layout.pp > 1 ? ppc.all_reduce_sum(sq + sq_experts) : sq + sq_experts);
    const double lr = learning_rate(t, step);
    // A non-finite or spiking step changes nothing (weights, moments, router biases); too
    // many in a row end the run before anything is saved from them.
    const double spike_at = guard.threshold();
    const auto verdict = guard.check(loss, norm);
    const bool apply = verdict == StepGuard::Verdict::apply;
    if (!apply) {
      res.skipped_steps = guard.skipped();
      const std::string why = verdict == StepGuard::Verdict::nonfinite
                                  ? fmt::format("loss {} and gradient norm {}", loss, norm)
                                  : fmt::format("loss {:.4f} spikes above {:.4f} (train.spike_zscore)", loss, spike_at);
      progress.clear();
      if (log_rank) spdlog::warn("step {} skipped: {}; {} in a row, {} in all", step + 1, why, guard.consecutive(), guard.skipped());
      MOE_CHECK(guard.consecutive() < t.max_skipped_steps, TrainingError,
                "{}: step {}: {} steps in a row skipped (train.max_skipped_steps), the last with {}; stopping without "
                "saving. {}; lower train.lr, or raise train.max_skipped_steps",
                cfg.source, step + 1, guard.consecutive(), why,
                ck.dir.empty() ? "No checkpoint was kept (checkpoint.dir is empty)"
                               : fmt::format("The last checkpoint in {} is intact and resumes the run", ck.dir));
    } else {
      if (t.grad_clip > 0 && norm > t.grad_clip) {
        s.dense->scale_grads(t.grad_clip / norm);
        s.experts->scale_grads(t.grad_clip / norm);
      }
      const ops::AdamWSpec spec{.lr = lr, .beta1 = t.beta1, .beta2 = t.beta2, .eps = t.adam_eps, .step = step + 1};
      s.dense->step(spec, t.weight_decay);
      s.experts->step(spec, t.weight_decay);
    }

    // Auxiliary-loss-free balancing: every rank applies the same global loads.
    if (apply)
      for (std::size_t i = 0; i < moe_layers.size(); ++i) {
        const double* row = ld + moe_row[i] * E;
        moe_layers[i]->update_bias(std::vector<double>(row, row + E), mc.bias_update_rate);
      }
    double lmin = 0, lmax = 0;
    for (std::int64_t i = 0; i < all_moe; ++i) {
      const auto [lo, hi] = std::minmax_element(ld + i * E, ld + (i + 1) * E);
      lmin = i == 0 ? *lo : std::min(lmin, *lo);
      lmax = std::max(lmax, *hi);
    }

    res.losses.push_back(loss);
    res.grad_norms.push_back(norm);
    res.tokens += global_tokens;
    res.steps = step + 1;
    if (apply) last_loss = loss;
    const std::int64_t done = step + 1 - start;  // steps of this segment of the run
    const bool last = step + 1 == end;
    synchronize(model.device());  // a GPU runs behind the host: the step ends when its kernels have
    const double step_seconds = since(step_t0);
    if (const TrafficReport traffic = device_traffic(); step == start || traffic.total.to_host > res.step_traffic.to_host)
      res.step_traffic = traffic.total, res.step_traffic_sites = traffic.describe();
    double val = 0;
    if (t.eval_every > 0 && (step + 1) % t.eval_every == 0 && !last) {
      progress.clear();
      s.timed(s.eval_s, [&] { val = res.val_loss = evaluate(); });
      if (log_rank) spdlog::info("step {:>5} | validation loss {:.4f}", step + 1, res.val_loss);
    }
    if (log_rank && ((step + 1) % t.log_every == 0 || step == start || last)) {
      progress.clear();
      const double secs = since(t0), mean = global_tokens * double(mc.top_k) / double(std::max<std::int64_t>(E, 1));
      std::string comm;
      for (const auto& [kind, bytes] : s.step_bytes())
        comm += fmt::format("{}{} {}", comm.empty() ? "" : ", ", kind, human_bytes(double(bytes) / double(done)));
      spdlog::info("step {:>5}/{} | loss {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.0f} tokens/s | tokens per expert "
                   "min/mean/max {:.0f}/{:.0f}/{:.0f} | dropped {:.0f} | sent per step: {} | saved activations {} "
                   "(GEMM inputs {} in {}){} | {:.1f} s",
                   step + 1, t.steps, loss, lr, norm, double(done) * global_tokens / secs, lmin, mean, lmax,
                   ld[loads.numel() - 1], comm.empty() ? "none" : comm, human_bytes(double(res.saved_bytes)),
                   human_bytes(double(res.saved_gemm_bytes)), precision_name(cfg.precision),
                   guard.skipped() ? fmt::format(" | skipped {}", guard.skipped()) : "", secs);
    }
    if (metrics.enabled()) {
      nlohmann::json r = {{"step", step + 1}, {"loss", loss}, {"lr", lr}, {"grad_norm", norm},
                          {"tokens_per_s", global_tokens / step_seconds},
                          {"mfu", plan.flops_per_step / step_seconds / double(s.world.size()) / peak_flops},
                          {"dropped", ld[loads.numel() - 1]}, {"saved_bytes", res.saved_bytes},
                          {"saved_gemm_bytes", res.saved_gemm_bytes}, {"skipped", !apply}, {"skipped_total", guard.skipped()},
                          {"elapsed_s", prior_wall + since(t0)}};
      if (val > 0) r["val_loss"] = val;
      for (const auto& [kind, bytes] : s.step_bytes()) {
        r["bytes"][kind] = bytes - (bytes_before.count(kind) ? bytes_before.at(kind) : 0);
        bytes_before[kind] = bytes;
      }
      for (std::int64_t i = 0; i < all_moe; ++i) r["expert_loads"].push_back(std::vector<double>(ld + i * E, ld + (i + 1) * E));
      metrics.log(r);
    }
    progress.draw(step + 1, since(t0));
    // A stop request on any rank stops every rank after this step (one scalar all-reduce).
    if (s.world.all_reduce_sum(double(g_stop)) > 0) {
      progress.clear();
      res.stopped = true;
      res.stop_signal = g_stop == SIGINT ? "SIGINT" : "SIGTERM";  // (a rank that got none: its peers had SIGTERM)
      if (log_rank) spdlog::info("stop requested ({}): ending after step {}{}", res.stop_signal, step + 1,
                                 ck.dir.empty() ? " without a checkpoint (checkpoint.dir is empty)" : ", checkpointed");
      break;
    }
    if (!ck.dir.empty() && ck.every > 0 && (step + 1) % ck.every == 0 && !last && apply) {  // none from a skipped step
      progress.clear();
      res.wall_seconds = prior_wall + since(t0);
      s.timed(s.ckpt_s, [&] { s.save(step + 1, res, loss, val); });
    }
  }
  progress.clear();
  // Per training step of this launch (validation and checkpoint traffic left out).
  const std::int64_t ran = std::max<std::int64_t>(1, res.steps - start);
  res.step_seconds = (since(t0) - (s.eval_s + s.ckpt_s - side_s0)) / double(ran);
  res.peak_tensor_bytes = double(tensor_memory(model.device()).peak);
  res.gemm_flops_per_step = s.world.all_reduce_sum(double(ops::gemm_flops() - s.side_flops)) / double(ran);
  res.planned_step_seconds = plan.time.step();
  res.planned_memory_bytes = plan.memory.total();
  res.planned_step_memory_bytes = plan.memory.activations + plan.memory.workspace + plan.memory.buffers;
  res.planned_flops_per_step = plan.gemm_flops_per_step;
  for (const auto& [kind, bytes] : s.step_bytes()) res.bytes_per_step[kind] = bytes / static_cast<std::uint64_t>(ran);
  res.remote_rows /= double(ran), res.remote_token_ranks /= double(ran), res.dispatch_bytes /= double(ran);
  // The pipeline's idle share of its schedule, mean over ranks, against 1F1B's ideal.
  res.bubble = s.world.all_reduce_sum(schedule_s > 0 ? 1 - schedule_busy / schedule_s : 0) / s.world.size();
  res.ideal_bubble = bubble_fraction(s.layout.pp, t.grad_accum, chunks);
  if (!res.stopped) s.timed(s.eval_s, [&] { res.val_loss = evaluate(); });  // a stopped job is short of time: save first
  if (!res.stopped && res.steps > start) metrics.log({{"step", res.steps}, {"val_loss", res.val_loss}});
  res.wall_seconds = prior_wall + since(t0);
  if (!ck.dir.empty() && res.steps > start) {
    s.timed(s.ckpt_s, [&] { s.save(res.steps, res, last_loss, res.val_loss); });
    res.last_checkpoint = ckpt::step_file(ck.dir, res.steps);
  }
  s.finish(res);
  return res;
}

}  // namespace moe
