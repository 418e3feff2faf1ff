#include "trainer/train.h"

#include <fnmatch.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "checkpoint/store.h"
#include "data/loader.h"
#include "kernels/ops.h"
#include "model/lora.h"
#include "plan/counts.h"
#include "plan/plan.h"
#include "comm/pipeline.h"
#include "trainer/trainer_state.h"

namespace moe {

namespace {
// Ranks per node as launched, one number on every rank: nodes of consecutive ranks, as many
// on each. Uneven nodes (8 ranks on one, 4 on another) or ranks placed round-robin leave it
// unknown, 0, so the ranks cannot disagree on the layout nor take a node for what it is not.
int launched_per_node(MpiCommunicator& world) {
  const auto [place, size] = world.node_place();
  const double mine = size, sum = world.all_reduce_sum(mine), squares = world.all_reduce_sum(mine * mine),
               scattered = world.all_reduce_sum(place == world.rank() % size ? 0.0 : 1.0);
  return sum * sum == squares * world.size() && scattered == 0 ? size : 0;  // sizes equal iff sum^2 = n sum x^2
}
}  // namespace

Layout trainable_layout(const Config& cfg, MpiCommunicator& world) {
  const int world_size = world.size();
  const Layout layout = resolve_layout(cfg, world_size, launched_per_node(world));
  MOE_CHECK(cfg.debug.hang_at_step == 0 || cfg.debug.hang_rank < world_size, ConfigError,
            "{}: debug.hang_rank = {}: there are {} ranks; the drill would never fire", cfg.source, cfg.debug.hang_rank,
            world_size);
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

double learning_rate(const TrainConfig& t, std::int64_t step) {
  if (step < t.warmup_steps) return t.lr * double(step + 1) / double(t.warmup_steps);
  const double span = double(std::max<std::int64_t>(1, t.steps - t.warmup_steps));
  const double p = std::min(1.0, double(step - t.warmup_steps) / span);  // progress after warm-up
  switch (t.lr_schedule) {
    case LrSchedule::constant: return t.lr;
    case LrSchedule::linear: return t.lr + (t.min_lr - t.lr) * p;
    case LrSchedule::cosine: return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + std::cos(M_PI * p));
    case LrSchedule::wsd: {
      const double q =
          t.decay_fraction > 0 ? std::clamp((p - (1 - t.decay_fraction)) / t.decay_fraction, 0.0, 1.0) : 0.0;
      return t.lr + (t.min_lr - t.lr) * q;
    }
  }
  return t.lr;
}

double mtp_loss_weight(const TrainConfig& t, std::int64_t step) {
  const bool final = t.mtp_final_fraction < 1 && double(step) >= t.mtp_final_fraction * double(t.steps);
  return final ? t.mtp_loss_weight_final : t.mtp_loss_weight;
}

namespace {
bool fnmatches(const std::string& pattern, const std::string& name) {
  return fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

// Whether a parameter of some pipeline stage has a name `named` accepts: the same verdict on
// every rank (one that threw alone would leave the others waiting).
bool named_on_some_stage(const ParamList& params, Communicator& pp,
                         const std::function<bool(const std::string&)>& named) {
  const bool here = std::any_of(params.begin(), params.end(), [&](const Param* p) { return named(p->name); });
  return pp.all_reduce_sum(here ? 1.0 : 0.0) > 0;
}

// The parameters a run keeps fixed: train.freeze's patterns, and under LoRA every tensor but
// the adapters. Every pattern and LoRA target must name something (counted over the pipeline
// stages), or a typo would train what it meant to keep.
std::function<bool(const std::string&)> frozen_names(const Config& cfg, const ParamList& params,
                                                     const ParamList& adapters, Communicator& pp) {
  const auto& patterns = cfg.train.freeze;
  for (const std::string& pat : patterns)
    MOE_CHECK(named_on_some_stage(params, pp, [&](const std::string& n) { return fnmatches(pat, n); }), ConfigError,
              "{}: train.freeze: pattern '{}' matches no parameter (names as in `moe ckpt inspect`)", cfg.source, pat);
  const LoraConfig& lora_cfg = cfg.model.lora;
  for (const std::string& target : lora_cfg.rank > 0 ? lora_cfg.targets : std::vector<std::string>{})
    MOE_CHECK(named_on_some_stage(params, pp, [&](const std::string& n) { return lora_target_matches(target, n); }),
              ConfigError,
              "{}: lora.targets: '{}' names no projection of this model (LoRA adapts {}, or all-linear; modules as "
              "in `moe ckpt inspect`, without .weight)",
              cfg.source, target, fmt::join(lora_projections(), ", "));
  std::set<std::string> trained_adapters;
  for (const Param* p : adapters) trained_adapters.insert(p->name);
  const bool lora = !trained_adapters.empty();
  return [patterns, trained_adapters, lora](const std::string& name) {
    if (lora && !trained_adapters.count(name)) return true;
    return std::any_of(patterns.begin(), patterns.end(), [&](const std::string& pat) { return fnmatches(pat, name); });
  };
}
}  // namespace

Trainer::Trainer(const Config& cfg, MpiCommunicator& world) : s_(std::make_unique<State>(cfg, world)) {
  auto& s = *s_;
  s.cluster = load_cluster(cfg);
  s.mesh.set_expert_link_delay(cfg.debug.link_delay_ms * 1e-3);
  s.model.init(static_cast<std::uint64_t>(cfg.train.seed));  // same values whatever the layout
  // A GPU run (its GPU chosen by the mesh): the model and its optimizer groups live there.
  // A sim run: the same, on the simulated GPU (kernels/device.h).
  if (cfg.device != DeviceKind::cpu) s.model.to(device_of(cfg.device));
  s.model.set_recompute(cfg.train.recompute);
  s.params = s.model.params();
  const auto frozen = frozen_names(cfg, s.params, s.model.adapters(), s.mesh.pp());
  ParamList dense, experts, frozen_dense, frozen_experts;
  for (Param* p : s.params) {
    const bool keep = frozen(p->name);
    (p->is_expert() ? (keep ? frozen_experts : experts) : (keep ? frozen_dense : dense)).push_back(p);
  }
  const auto bucket = static_cast<std::size_t>(cfg.parallel.bucket_mb * (1 << 20));
  const int zero = static_cast<int>(cfg.parallel.zero);
  s.dense = std::make_unique<ParamGroup>(dense, s.dp(), zero, bucket);
  s.experts = std::make_unique<ParamGroup>(experts, s.edp(), zero, bucket);
  s.frozen_dense = std::make_unique<ParamGroup>(frozen_dense, s.dp(), zero, bucket, ParamGroup::Role::frozen);
  s.frozen_experts = std::make_unique<ParamGroup>(frozen_experts, s.edp(), zero, bucket, ParamGroup::Role::frozen);
}

Trainer::~Trainer() = default;

std::map<std::string, Tensor> Trainer::gather_weights(bool optimizer) {
  auto& s = *s_;
  std::map<std::string, Tensor> out;
  // One tensor at full shape from this rank's part (tp shards and experts gathered).
  auto full = [&](const Param& p, const Tensor& mine) {
    Tensor t = mine.to(Device::cpu);
    if (p.is_split()) {  // every tp rank's shard, put at its place
      Tensor all = Tensor::empty({s.layout.tp * mine.numel()}, DType::f32),
             whole = Tensor::empty(p.full_shape(), DType::f32);
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
    if (!optimizer || !g->trained()) continue;
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

}  // namespace moe
