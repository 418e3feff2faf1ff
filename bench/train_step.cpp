// bench_train_step CONFIG OUT_JSON [key=value ...]: times training steps (forward,
// backward, AdamW) of the config's model on random tokens in one process, on the config's
// device and precision, and writes the resolved model section and the result as JSON for the
// PyTorch peer (bench/train_step.py): tokens/s, MFU against the cost.cluster's peak (FLOPs:
// plan/counts.h's training_flops_per_token, activated parameters plus attention) and the most
// tensor memory held at once.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>

#include "kernels/ops.h"
#include "model/transformer.h"
#include "plan/cluster.h"
#include "plan/counts.h"
#include "trainer/config_json.h"

using namespace moe;

// Over 60 lines by design: a benchmark's protocol read top to bottom (set up, warm up, time
// the rounds, print the ratio), as bench/README.md describes it.
int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench_train_step CONFIG OUT_JSON [key=value ...]\n";
    return 2;
  }
  const Config cfg = load_config(argv[1], std::vector<std::string>(argv + 3, argv + argc));
  const ModelConfig& m = cfg.model;
  // BENCH_STEPS and BENCH_ROUNDS shorten a run where a step takes seconds (a GPU model).
  const auto env = [](const char* name, std::int64_t fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::max<std::int64_t>(1, std::atoll(v)) : fallback;
  };
  const std::int64_t B = cfg.train.micro_batch, T = m.seq_len, warmup = 3, steps = env("BENCH_STEPS", 20);
  const Device dev = device_of(cfg.device);
  if (dev == Device::cuda) use_cuda_device(0);
  Transformer model(m, {}, cfg.precision);
  model.init(1);
  model.to(dev);
  const ParamList params = model.params();
  std::vector<Tensor> ms, vs;
  for (Param* p : params)
    ms.push_back(Tensor::zeros(p->w.shape(), DType::f32, dev)),
        vs.push_back(Tensor::zeros(p->w.shape(), DType::f32, dev));
  reset_tensor_memory_peak(dev);
  Tensor tok = Tensor::empty({B * T}, DType::i32), tgt = Tensor::empty({B * T}, DType::i32);
  std::mt19937 rng(1);
  // Best of `rounds` timed rounds of `steps` steps after `warmup` steps: this machine's
  // neighbours make single timings noisy; the best round is the machine's capability.
  const std::int64_t rounds = env("BENCH_ROUNDS", 5);
  double best = 1e30;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  for (std::int64_t s = 0; s < warmup + rounds * steps; ++s) {
    if (s == warmup) reset_device_traffic();  // the timed steps' host<->device traffic
    if (s >= warmup && (s - warmup) % steps == 0) {
      synchronize(dev);  // (the GPU runs behind the host)
      if (s > warmup)
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      t0 = std::chrono::steady_clock::now();
    }
    for (std::int64_t i = 0; i < B * T; ++i)
      tok.data<std::int32_t>()[i] = static_cast<std::int32_t>(rng() % m.vocab_size),
      tgt.data<std::int32_t>()[i] = static_cast<std::int32_t>(rng() % m.vocab_size);
    for (Param* p : params) p->g.zero();
    model.forward(tok, tgt, B, T);
    model.backward(1.0 / double(B * T), 1.0 / double(B));
    for (std::size_t i = 0; i < params.size(); ++i)
      ops::adamw_step(params[i]->w, ms[i], vs[i], params[i]->g, {.lr = 1e-3, .weight_decay = 0.1, .step = s + 1});
  }
  synchronize(dev);
  const double secs = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  const nlohmann::json model_json = config_section_json(cfg, "model");
  const double tps = double(steps * B * T) / secs, flops = training_flops_per_token(m);
  const double peak = load_cluster(cfg).peak_tflops(cfg.precision) * 1e12, memory = double(tensor_memory(dev).peak);
  std::ofstream(argv[2]) << nlohmann::json{
      {"model", model_json},
      {"batch", B},
      {"steps", steps},
      {"rounds", rounds},
      {"moe_tokens_per_s", tps},
      {"device", std::string(device_name(dev))},
      {"precision", precision_name(cfg.precision)},
      {"flops_per_token", flops},
      {"peak_flops", peak},
      {"moe_peak_bytes",
       memory}}.dump(1);
  std::cout << "moe:     " << static_cast<long>(tps) << " tokens/s";
  if (peak > 0) std::cout << ", MFU " << 100 * tps * flops / peak << "% of " << peak / 1e12 << " TFLOP/s";
  std::cout << ", peak tensor memory " << memory / 1e9 << " GB (" << precision_name(cfg.precision) << " on "
            << device_name(dev) << "; best of " << rounds << " rounds of " << steps << " steps of " << B << " x " << T
            << " tokens)\n";
  if (dev != Device::cpu) {
    const Traffic t = device_traffic().total;
    const double n = double(rounds * steps);
    std::cout << "moe:     per step " << double(t.to_host) / n << " copies to the host, " << double(t.to_device) / n
              << " to the device, " << double(t.waits) / n << " waits\n";
  }
  if (cfg.precision == Precision::fp8)
    std::cout << "moe:     sm90_fp8_gemm reference fallbacks " << ops::fp8_reference_fallbacks() << " (0 expected)\n";
  return 0;
}
