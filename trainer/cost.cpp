#include "trainer/cost.h"

#include <algorithm>
#include <chrono>

#include "kernels/ops.h"

namespace moe {
namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

void calibrate(Cluster& c, Communicator& world) {
  const std::int64_t n = 1024;
  Tensor a = Tensor::zeros({n, n}, DType::f32), b = Tensor::zeros({n, n}, DType::f32),
         y = Tensor::empty({n, n}, DType::f32);
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const double t0 = now();
    ops::matmul_forward(y, a, b);
    best = std::min(best, now() - t0);
  }
  // Every rank measured at once, sharing the machine as the run will: their mean is the
  // per-device peak.
  const double gemm = 2.0 * double(n * n * n) / best / 1e12;
  c.peak_bf16_tflops = c.peak_fp8_tflops = world.all_reduce_sum(gemm) / world.size();
  Tensor buf = Tensor::zeros({4 << 20}, DType::f32), copy = Tensor::empty({4 << 20}, DType::f32);
  double t_best = 1e30;
  for (int i = 0; i < 3; ++i) {
    world.barrier();
    const double t0 = now();
    if (world.size() > 1) world.all_reduce_sum(buf);
    else copy.copy_from(buf);  // one process (moe plan): shared-memory MPI moves bytes by copying them
    t_best = std::min(t_best, now() - t0);
  }
  // Memory bandwidth: a copy reads and writes every byte (all ranks at once, as they will run).
  double t_copy = 1e30;
  for (int i = 0; i < 3; ++i) {
    world.barrier();
    const double t0 = now();
    copy.copy_from(buf);
    t_copy = std::min(t_copy, now() - t0);
  }
  c.memory_gbps = world.all_reduce_sum(2 * double(buf.nbytes()) / t_copy / 1e9) / world.size();
  const double p = world.size(), moved = p > 1 ? 2 * (p - 1) / p * double(buf.nbytes()) : double(buf.nbytes());
  c.intra_node_gbps = c.inter_node_gbps = moved / t_best / 1e9;
}

CostCounters& CostCounters::operator+=(const CostCounters& o) {
  compute += o.compute, communication += o.communication, evaluation += o.evaluation, checkpoint += o.checkpoint;
  pipeline_idle += o.pipeline_idle;
  tokens += o.tokens, flops += o.flops, train_seconds += o.train_seconds;
  return *this;
}

nlohmann::json cost_json(const Cluster& c, const CostCounters& k, const Config& cfg, int world) {
  const double dh = k.device_hours(), price = c.price_per_device_hour;
  const double peak = c.peak_tflops(cfg.precision) * 1e12;
  const double achieved = k.train_seconds > 0 ? k.flops / k.train_seconds / world : 0;  // FLOP/s per device
  const double tokens_per_device_hour = dh > 0 ? k.tokens / dh : 0;
  nlohmann::json j = {{"cluster",
                       {{"name", c.name},
                        {"device", c.device},
                        {"file", c.file},
                        {"price_per_device_hour", price},
                        {"peak_tflops", c.peak_tflops(cfg.precision)},
                        {"calibrated", c.calibrate},
                        {"interconnect_gbps", c.inter_node_gbps}}},
                      {"devices", world},
                      {"device_hours",
                       {{"total", dh},
                        {"compute", k.compute},
                        {"communication", k.communication},
                        {"evaluation", k.evaluation},
                        {"checkpoint", k.checkpoint},
                        {"pipeline_idle", k.pipeline_idle}}},
                      {"tokens", k.tokens},
                      {"flops_per_token", training_flops_per_token(cfg.model)},
                      {"active_parameters", active_parameters(cfg.model)},
                      {"achieved_tflops_per_device", achieved / 1e12},
                      {"mfu", peak > 0 ? achieved / peak : 0.0},
                      {"cost_usd", dh * price},
                      {"usd_per_million_tokens", k.tokens > 0 ? dh * price / k.tokens * 1e6 : 0.0}};
  const double target = cfg.train.target_tokens;
  if (target > 0 && tokens_per_device_hour > 0) {
    const double hours = std::max(0.0, target - k.tokens) / tokens_per_device_hour;  // device-hours still needed
    j["projection"] = {
        {"target_tokens", target}, {"device_hours", hours}, {"wall_hours", hours / world}, {"cost_usd", hours * price}};
  }
  return j;
}

std::string cost_text(const nlohmann::json& r) {
  const auto& d = r["device_hours"];
  const double total = d["total"].get<double>();
  auto share = [&](const char* k) { return total > 0 ? 100 * d[k].get<double>() / total : 0.0; };
  std::string s = fmt::format(
      "\n== cost report ({}: {}, ${}/device-hour{}) ==\n"
      "device-hours      {:.6f} on {} devices: compute {:.0f}%, communication {:.0f}%, pipeline idle {:.0f}%, "
      "evaluation {:.0f}%, "
      "checkpoints {:.0f}%\n"
      "tokens            {:.0f} ({:.3g} FLOP/token, {} active parameters)\n"
      "throughput        {:.3g} TFLOP/s per device, MFU {:.1f}% of {:.3g} TFLOP/s\n"
      "cost              ${:.6f} (${:.4f} per million tokens)\n",
      r["cluster"]["name"].get<std::string>(), r["cluster"]["device"].get<std::string>(),
      r["cluster"]["price_per_device_hour"].get<double>(),
      r["cluster"]["calibrated"].get<bool>() ? ", peak measured at start" : "", total, r["devices"].get<int>(),
      share("compute"), share("communication"), share("pipeline_idle"), share("evaluation"), share("checkpoint"),
      r["tokens"].get<double>(), r["flops_per_token"].get<double>(), r["active_parameters"].get<std::int64_t>(),
      r["achieved_tflops_per_device"].get<double>(), 100 * r["mfu"].get<double>(),
      r["cluster"]["peak_tflops"].get<double>(), r["cost_usd"].get<double>(),
      r["usd_per_million_tokens"].get<double>());
  if (r.contains("projection")) {
    const auto& p = r["projection"];
    s += fmt::format(
        "projection        {:.3g} tokens: {:.4g} more device-hours ({:.4g} h on {} devices), ${:.4g} at this rate\n",
        p["target_tokens"].get<double>(), p["device_hours"].get<double>(), p["wall_hours"].get<double>(),
        r["devices"].get<int>(), p["cost_usd"].get<double>());
  }
  return s;
}

}  // namespace moe
