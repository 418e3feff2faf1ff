#include "trainer/trainer_state.h"

#include <spdlog/spdlog.h>

#include <fnmatch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "checkpoint/store.h"
#include "data/prepare.h"
#include "trainer/atomic_file.h"

namespace moe {

void Trainer::State::lock_run_dir() {
  std::string error;
  if (world.rank() == 0) try {
      run_lock = std::make_unique<DirLock>(cfg.checkpoint.dir, "checkpoint.dir");
    } catch (const std::exception& e) {
      error = e.what();
    }
  error = world.broadcast_text(error, 0);
  if (!error.empty()) throw ConfigError(error);
}

// The checkpoint's tensors of the kinds being loaded that the model has no place for:
// an error listing them, unless checkpoint.drop names them (ckpt::read checks the other way).
void Trainer::State::expect_nothing_left_out(const std::string& path, const std::vector<ckpt::Dataset>& datasets,
                                             CheckpointPart part) const {
  std::set<std::string> wanted;
  for (const auto& d : datasets) wanted.insert(d.name);
  std::vector<std::string> extra;
  for (const std::string& n : ckpt::dataset_names(path)) {
    const bool loaded_kind = n.rfind("weights/", 0) == 0 || n.rfind("buffers/", 0) == 0 ||
                             (part == CheckpointPart::all && n.rfind("optimizer/", 0) == 0);
    const bool dropped = std::any_of(cfg.checkpoint.drop.begin(), cfg.checkpoint.drop.end(),
                                     [&](const std::string& p) { return fnmatch(p.c_str(), n.c_str(), 0) == 0; });
    if (loaded_kind && !wanted.count(n) && !dropped) extra.push_back(n);
  }
  if (extra.empty()) return;
  std::string list;
  for (std::size_t i = 0; i < std::min<std::size_t>(extra.size(), 3); ++i) list += (i ? ", " : "") + extra[i];
  throw CheckpointError(fmt::format(
      "{}: {} tensor(s) the model does not have ({}{}); the next save would lose them. Load it into the model it was "
      "written by, or name them in checkpoint.drop",
      path, extra.size(), list, extra.size() > 3 ? ", ..." : ""));
}

// Fine-tuning with LoRA from a checkpoint without adapters (a base model): the adapters keep
// their initial values (B = 0: the model starts as the base) rather than being looked for.
void Trainer::State::keep_fresh_adapters(const std::string& path, CheckpointPlan& plan) const {
  if (!cfg.model.lora.rank) return;
  const auto names = ckpt::dataset_names(path);
  const std::set<std::string> in_file(names.begin(), names.end());
  const auto absent_adapter = [&](const std::string& n) {
    return n.find(".lora_") != std::string::npos && !in_file.count(n);
  };
  std::erase_if(plan.datasets, [&](const ckpt::Dataset& d) { return absent_adapter(d.name); });
  std::erase_if(plan.slices, [&](const ckpt::Slice& s) { return absent_adapter(s.dataset); });
}

RunMeta Trainer::State::load(const std::string& path, CheckpointPart part) {
  RunMeta meta = read_run_meta(path);
  CheckpointPlan plan = plan_read(groups(), model, part);
  // Every rank checks and opens every dataset (a mismatch in one stage's layers is then one
  // error on every rank), and reads its own slices.
  if (layout.pp > 1) plan.datasets = join_stages(plan.datasets);
  if (part == CheckpointPart::weights) keep_fresh_adapters(path, plan);
  expect_nothing_left_out(path, plan.datasets, part);
  ckpt::read(path, plan.datasets, plan.slices);
  plan.copy_back();
  return meta;
}

void Trainer::State::save(std::int64_t step, const TrainResult& res, double last_loss, double val_loss) {
  finish_pending(step);  // one write in flight at a time, committed in order
  const std::string& dir = cfg.checkpoint.dir;
  const auto t0 = Clock::now();
  if (world.rank() == 0) {
    std::filesystem::create_directories(dir);
    ckpt::remove_stale_temps(dir);
  }
  world.barrier();
  const CostCounters k = cost_so_far(res.tokens);
  RunMeta meta{.step = step,
               .seed = static_cast<std::uint64_t>(cfg.train.seed),
               .config_yaml = config_to_yaml(cfg),
               .layout = fmt::format("world {}: pp {} x dp {} x tp {}, ep {}, zero {}", layout.world(), layout.pp,
                                     layout.dp, layout.tp, layout.ep, cfg.parallel.zero),
               .global_batch = double(global_seqs()),
               .wall_seconds = res.wall_seconds,
               .device_hours = k.device_hours(),
               .last_loss = last_loss,
               .val_loss = val_loss,
               .cost = k,
               .tokenizer = data::tokenizer_digest(cfg.data.dir),
               .replicas = replicas};
  // Attributes must be the same on every rank: rank 0's clock decides (the cost counters
  // are already means over ranks).
  Tensor clock = Tensor::empty({1}, DType::f64);
  clock.data<double>()[0] = meta.wall_seconds;
  world.broadcast(clock, 0);
  meta.wall_seconds = clock.data<double>()[0];
  const std::string path = ckpt::step_file(dir, step);
  const bool tp_lead = mesh.coords().tp == 0;
  CheckpointPlan plan = plan_write(groups(), model, tp_lead, tp_lead && mesh.coords().dp == 0);
  if (layout.pp > 1) plan.datasets = join_stages(plan.datasets);  // every rank creates every dataset
  if (cfg.checkpoint.async) {
    std::vector<Tensor> staged;  // a GPU's state, copied to the host by the plan already
    for (auto& [device, host] : plan.staged) staged.push_back(host);
    pending = ckpt::start_write(ckpt::temp_file(path), mesh.world(), meta.to_meta(), plan.datasets, plan.slices,
                                std::move(staged), static_cast<int>(cfg.debug.slow_checkpoint_ms));
    pending_path = path, pending_t0 = t0;
    return;
  }
  ckpt::write(ckpt::temp_file(path), mesh.world(), meta.to_meta(), plan.datasets, plan.slices);
  commit(path, t0, "");
}

void Trainer::State::commit(const std::string& path, Clock::time_point t0, const char* how) {
  world.barrier();  // every rank closed the file
  if (world.rank() == 0) {
    ckpt::commit(cfg.checkpoint.dir, path, cfg.checkpoint.keep);
    spdlog::info("checkpoint {} ({} MB, {:.2f} s{})", path,
                 fmt::format("{:.1f}", double(std::filesystem::file_size(path)) / 1e6), since(t0), how);
  }
  world.barrier();
}

void Trainer::State::finish_pending(std::int64_t step) {
  if (!pending.active()) return;
  pending.finish(mesh.world());
  commit(pending_path, pending_t0, fmt::format(", written behind the steps, committed after step {}", step).c_str());
}

void Trainer::State::poll_pending(std::int64_t step) {
  if (pending.active() && world.all_reduce_sum(pending.written() ? 0.0 : 1.0) == 0) finish_pending(step);
}

std::vector<ckpt::Dataset> Trainer::State::stage_list(const std::vector<ckpt::Dataset>& mine, int stage) {
  std::string text;  // "name\tdim dim ...\n" per dataset
  for (const auto& d : mine) {
    text += d.name + "\t";
    for (auto n : d.shape) text += std::to_string(n) + " ";
    text += "\n";
  }
  std::vector<ckpt::Dataset> list;
  std::istringstream in(mesh.pp().broadcast_text(text, stage));
  for (std::string line; std::getline(in, line);) {
    const auto tab = line.find('\t');
    ckpt::Dataset d{line.substr(0, tab), {}};
    std::istringstream dims(line.substr(tab + 1));
    for (std::int64_t n; dims >> n;) d.shape.push_back(n);
    list.push_back(std::move(d));
  }
  return list;
}

// Each dataset once: a tensor two stages hold (the embedding with MTP) is listed by both.
std::vector<ckpt::Dataset> Trainer::State::join_stages(const std::vector<ckpt::Dataset>& mine) {
  std::vector<ckpt::Dataset> all;
  std::set<std::string> seen;
  for (int stage = 0; stage < layout.pp; ++stage)
    for (auto& d : stage_list(mine, stage))
      if (seen.insert(d.name).second) all.push_back(std::move(d));
  return all;
}

std::optional<std::string> Trainer::State::agreed_latest() {
  std::string answer;  // "" none, "+path" found, "!message" error
  if (world.rank() == 0) {
    try {
      const auto l = ckpt::latest(cfg.checkpoint.dir);
      answer = l ? "+" + *l : "";
    } catch (const CheckpointError& e) {
      answer = std::string("!") + e.what();
    }
  }
  answer = world.broadcast_text(answer, 0);
  if (answer.empty()) return std::nullopt;
  if (answer[0] == '!') throw CheckpointError(answer.substr(1));
  return answer.substr(1);
}

CostCounters Trainer::State::cost_so_far(double tokens_total) {
  // Pipeline idle: time inside operations on the pipeline axis (a stage waiting for its
  // neighbour's activations or gradients: the bubble); zero while pp = 1.
  const double wall = since(launch_t0), comm = comm_now() - comm0 - side_comm,
               idle = mesh.pp().seconds() - pp0 - side_pp;
  Tensor t = Tensor::empty({6}, DType::f64);  // seconds on this rank, summed over ranks below
  double* v = t.data<double>();
  v[0] = wall - eval_s - ckpt_s - comm, v[1] = comm - idle, v[2] = eval_s, v[3] = ckpt_s, v[4] = wall - eval_s - ckpt_s;
  v[5] = idle;
  world.all_reduce_sum(t);
  CostCounters k = prior, now;
  now.compute = v[0] / 3600, now.communication = v[1] / 3600, now.evaluation = v[2] / 3600,
  now.checkpoint = v[3] / 3600;
  now.pipeline_idle = v[5] / 3600;
  now.train_seconds = v[4] / world.size();
  now.tokens = tokens_total - prior.tokens;
  now.flops = now.tokens * training_flops_per_token(cfg.model);
  k += now;
  return k;
}

std::int64_t Trainer::State::begin(TrainResult& res, const std::function<double()>& evaluate, bool log_rank) {
  // Where to start: the run's own latest checkpoint (resume: everything), else fine-tuning's
  // init_from (weights only: fresh optimizer, schedule from step 0), else the init.
  const auto& ck = cfg.checkpoint;
  const auto& t = cfg.train;
  std::int64_t start = 0;
  if (auto latest = !ck.dir.empty() && ck.resume ? agreed_latest() : std::nullopt) {
    expect_same_tokenizer(*latest, "resume");
    RunMeta meta;
    timed(ckpt_s, [&] { meta = load(*latest, CheckpointPart::all); });
    start = meta.step;
    prior = meta.cost;
    replicas = meta.replicas;
    res.tokens = meta.cost.tokens, res.resume.resumed_from = *latest, res.resume.start_step = start,
    res.resume.prior_wall_seconds = meta.wall_seconds;
    if (log_rank) {
      spdlog::info("resumed from {} (step {}, written by {}){}", *latest, start, meta.layout,
                   start >= t.steps
                       ? fmt::format(": train.steps = {} are done; raise it to train on, or --fresh", t.steps)
                       : "");
      if (meta.seed != static_cast<std::uint64_t>(t.seed))
        spdlog::warn(
            "warning: train.seed changes from {} to {}: the steps ahead draw other batches than the run that wrote the "
            "checkpoint would have",
            meta.seed, t.seed);
      if (meta.global_batch > 0 && meta.global_batch != double(global_seqs()))
        spdlog::warn(
            "warning: the global batch changes from {:.0f} to {} sequences per step (dp x grad_accum x micro_batch): "
            "the steps ahead see other data than the run that wrote the checkpoint would have",
            meta.global_batch, global_seqs());
    }
  } else if (!ck.init_from.empty()) {
    expect_same_tokenizer(ck.init_from, "fine-tune from");
    RunMeta meta;
    timed(ckpt_s, [&] { meta = load(ck.init_from, CheckpointPart::weights); });
    res.resume.init_from = ck.init_from;
    timed(eval_s, [&] { res.resume.init_val_loss = evaluate(); });
    if (log_rank)
      spdlog::info("fine-tuning from {} (step {} of its run): validation loss {:.4f} with its weights{}", ck.init_from,
                   meta.step, res.resume.init_val_loss,
                   meta.val_loss > 0 ? fmt::format(" (it recorded {:.4f} on its own data)", meta.val_loss) : "");
  }
  return start;
}

// Token ids mean what the checkpoint's run meant by them: the same tokenizer.model, not just
// the same vocabulary size (every rank reads the same files: all throw alike).
void Trainer::State::expect_same_tokenizer(const std::string& checkpoint, const char* what) const {
  const std::string theirs = read_run_meta(checkpoint).tokenizer, ours = data::tokenizer_digest(cfg.data.dir);
  MOE_CHECK(theirs.empty() || ours.empty() || theirs == ours, ConfigError,
            "{}: cannot {} {}: it was trained with tokenizer xxh64 {}, and {}/tokenizer.model is xxh64 {} (same "
            "vocabulary size, other tokens); prepare data.dir with --set data.tokenizer=<that run's tokenizer.model>{}",
            cfg.source, what, checkpoint, theirs, cfg.data.dir, ours,
            std::string(what) == "resume" ? ", or start over with --fresh" : "");
}

void Trainer::State::finish(TrainResult& res) {
  const auto& ck = cfg.checkpoint;
  // The cost report: every launch so far (this one's last save included; the checkpoint
  // holds the counters as they were when it was written).
  res.cost = cost_so_far(res.tokens);
  res.device_hours = res.cost.device_hours();
  const nlohmann::json report = cost_json(cluster, res.cost, cfg, world.size());
  res.cost_report = cost_text(report);
  if (!ck.dir.empty() && world.rank() == 0) {
    std::filesystem::create_directories(ck.dir);
    write_atomically((std::filesystem::path(ck.dir) / "cost.json").string(), report.dump(2) + "\n");
  }
}

}  // namespace moe
