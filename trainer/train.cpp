#include "trainer/train.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/loader.h"
#include "kernels/ops.h"
#include "model/transformer.h"
#include "parallel/grad_buffer.h"
#include "parallel/mesh.h"

namespace moe {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The layout (parallel/mesh), then what this build cannot run yet (a layout, a precision, a
// device), rejected before any compute rather than silently training something else.
std::int64_t data_parallel_size(const Config& cfg, const Communicator& world) {
  MOE_CHECK(cfg.precision == Precision::fp32 && cfg.device == DeviceKind::cpu, ConfigError,
            "{}: precision and device: only fp32 on cpu is implemented so far; set precision: fp32 and device: cpu",
            cfg.source);
  const Layout l = resolve_layout(cfg, world.size());
  MOE_CHECK(l.tp == 1 && l.pp == 1 && l.ep == 1 && cfg.parallel.zero == 0, ConfigError,
            "{}: parallel: tp = {}, pp = {}, ep = {}, zero = {}: only data parallelism is implemented so far; "
            "set them to 1, 1, 1, 0",
            cfg.source, l.tp, l.pp, l.ep, cfg.parallel.zero);
  return l.dp;
}

double unigram_entropy(const std::string& dir) {
  std::ifstream in(std::filesystem::path(dir) / "meta.json");
  if (!in) return 0;
  return nlohmann::json::parse(in, nullptr, false).value("unigram_entropy_nats", 0.0);
}

// AdamW moments of one parameter.
struct Moments {
  Tensor m, v;
};

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

TrainResult train(const Config& cfg, Communicator& world) {
  const auto& t = cfg.train;
  const auto& mc = cfg.model;
  const std::int64_t dp = data_parallel_size(cfg, world), rank = world.rank(), T = mc.seq_len, mb = t.micro_batch;
  const std::int64_t global_seqs = dp * t.grad_accum * mb;
  const double global_tokens = double(global_seqs * T);

  const data::TokenStream train_stream(cfg.data.dir, "train", static_cast<std::uint64_t>(mc.vocab_size));
  const data::TokenStream val_stream(cfg.data.dir, "val", static_cast<std::uint64_t>(mc.vocab_size));
  data::Loader loader(train_stream, T, static_cast<std::uint64_t>(t.seed), global_seqs);
  const data::Loader val_loader(val_stream, T, static_cast<std::uint64_t>(t.seed), global_seqs);

  Transformer model(mc);
  model.init(static_cast<std::uint64_t>(t.seed));  // same seed everywhere: identical replicas
  const ParamList params = model.params();
  GradBuffer grads(params, static_cast<std::size_t>(cfg.parallel.bucket_mb * (1 << 20)));
  std::vector<Moments> moments;
  std::int64_t n_params = 0;
  for (Param* p : params) {
    moments.push_back({Tensor::zeros(p->w.shape(), DType::f32), Tensor::zeros(p->w.shape(), DType::f32)});
    n_params += p->w.numel();
  }
  const auto moe_layers = model.moe_layers();
  const std::int64_t E = mc.routed_experts;
  if (rank == 0)
    spdlog::info("model: {} parameters, {} MoE layers x {} experts (top-{}); data: {}; {} ranks x {} micro-batches x {} "
                 "sequences x {} tokens = {:.0f} tokens per step",
                 n_params, moe_layers.size(), E, mc.top_k, train_stream.describe(), dp, t.grad_accum, mb, T, global_tokens);

  Tensor tok = Tensor::empty({mb * T}, DType::i32), tgt = Tensor::empty({mb * T}, DType::i32);
  // Validation: the first eval_batches global batches of the held-out split, in order.
  auto evaluate = [&] {
    double ce = 0;
    for (std::int64_t b = 0; b < t.eval_batches; ++b)
      for (std::int64_t k = 0; k < t.grad_accum; ++k) {
        val_loader.fill_in_order(b * global_seqs + (k * dp + rank) * mb, mb, tok, tgt);
        ce += model.forward(tok, tgt, mb, T).ce_sum;
      }
    return world.all_reduce_sum(ce) / (global_tokens * double(t.eval_batches));
  };

  TrainResult res;
  res.unigram_entropy = unigram_entropy(cfg.data.dir);
  Tensor loads = Tensor::zeros({static_cast<std::int64_t>(moe_layers.size()) * std::max<std::int64_t>(E, 1) + 1}, DType::f64);
  const auto t0 = Clock::now();
  for (std::int64_t step = 0; step < t.steps; ++step) {
    grads.zero();
    loads.zero();
    double loss = 0;
    double* ld = loads.data<double>();
    for (std::int64_t k = 0; k < t.grad_accum; ++k) {
      loader.fill(step, (k * dp + rank) * mb, mb, tok, tgt);  // this rank's rows of the global batch
      const auto l = model.forward(tok, tgt, mb, T);
      model.backward(1.0 / global_tokens, 1.0 / double(global_seqs));
      loss += l.ce_sum / global_tokens + l.aux_sum / double(global_seqs);
      for (std::size_t i = 0; i < moe_layers.size(); ++i) {
        for (std::int64_t e = 0; e < E; ++e) ld[std::int64_t(i) * E + e] += double(moe_layers[i]->load()[std::size_t(e)]);
        ld[loads.numel() - 1] += double(moe_layers[i]->dropped());
      }
    }
    // Data parallel: sum gradients, loss and expert loads over ranks.
    grads.all_reduce(world);
    loss = world.all_reduce_sum(loss);
    world.all_reduce_sum(loads);

    const double norm = std::sqrt(ops::sum_squares(grads.flat()));
    if (t.grad_clip > 0 && norm > t.grad_clip) ops::scale(grads.flat(), t.grad_clip / norm);
    const double lr = learning_rate(t, step);
    for (std::size_t i = 0; i < params.size(); ++i) {
      Param* p = params[i];
      ops::adamw_step(p->w, moments[i].m, moments[i].v, p->g,
                      {.lr = lr, .beta1 = t.beta1, .beta2 = t.beta2, .eps = t.adam_eps,
                       .weight_decay = p->decay ? t.weight_decay : 0.0, .step = step + 1});
    }
    // Auxiliary-loss-free balancing: every rank applies the same global loads.
    double imbalance = 0;
    for (std::size_t i = 0; i < moe_layers.size(); ++i) {
      std::vector<double> global(ld + std::int64_t(i) * E, ld + std::int64_t(i + 1) * E);
      moe_layers[i]->update_bias(global, mc.bias_update_rate);
      const double mean = global_tokens * double(mc.top_k) / double(E);
      imbalance = std::max(imbalance, *std::max_element(global.begin(), global.end()) / mean);
    }

    res.losses.push_back(loss);
    res.tokens += global_tokens;
    res.steps = step + 1;
    const bool last = step + 1 == t.steps;
    if (t.eval_every > 0 && (step + 1) % t.eval_every == 0 && !last) {
      res.val_loss = evaluate();
      if (rank == 0) spdlog::info("step {:>5} | validation loss {:.4f}", step + 1, res.val_loss);
    }
    if (rank == 0 && ((step + 1) % t.log_every == 0 || step == 0 || last)) {
      const double secs = since(t0);
      spdlog::info("step {:>5}/{} | loss {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.0f} tokens/s | expert load max/mean "
                   "{:.2f} | dropped {:.0f} | {:.1f} s",
                   step + 1, t.steps, loss, lr, norm, res.tokens / secs, imbalance, ld[loads.numel() - 1], secs);
    }
  }
  res.val_loss = evaluate();
  res.wall_seconds = since(t0);
  return res;
}

}  // namespace moe
