#include "trainer/cost.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "kernels/ops.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

std::string find_cluster_file(const Config& cfg) {
  const std::string& name = cfg.cost.cluster;
  if (name.find('/') != std::string::npos || name.ends_with(".yaml")) return name;
  std::vector<fs::path> tried;
  if (!cfg.source.empty() && fs::exists(cfg.source)) tried.push_back(fs::path(cfg.source).parent_path() / "clusters" / (name + ".yaml"));
#ifdef MOE_SOURCE_DIR
  tried.push_back(fs::path(MOE_SOURCE_DIR) / "configs" / "clusters" / (name + ".yaml"));
#endif
  for (const auto& p : tried)
    if (fs::exists(p)) return p.string();
  std::string where;
  for (const auto& p : tried) where += (where.empty() ? "" : ", ") + p.string();
  throw ConfigError(fmt::format("{}: cost.cluster: no cluster '{}' (looked for {}); name a file in configs/clusters/ or a path",
                                cfg.source, name, where.empty() ? "nothing" : where));
}

// MoE blocks of the model (all blocks after the dense ones, when it has routed experts).
std::int64_t moe_layers(const ModelConfig& m) {
  return m.routed_experts > 0 ? std::max<std::int64_t>(0, m.n_layers - m.dense_layers) : 0;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

Cluster load_cluster(const Config& cfg) {
  Cluster c;
  c.file = find_cluster_file(cfg);
  YAML::Node n;
  try {
    n = YAML::LoadFile(c.file);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: cannot read the cluster description: {}", c.file, e.what()));
  }
  auto get = [&](const char* key, auto& out, bool required) {
    if (!n[key]) {
      if (required) throw ConfigError(fmt::format("{}: missing key '{}'", c.file, key));
      return;
    }
    try {
      out = n[key].as<std::decay_t<decltype(out)>>();
    } catch (const YAML::Exception&) {
      throw ConfigError(fmt::format("{}:{}: {}: not a valid value", c.file, n[key].Mark().line + 1, key));
    }
  };
  get("name", c.name, true);
  get("device", c.device, true);
  get("calibrate", c.calibrate, false);
  get("peak_bf16_tflops", c.peak_bf16_tflops, !c.calibrate);
  get("peak_fp8_tflops", c.peak_fp8_tflops, !c.calibrate);
  get("memory_gb", c.memory_gb, true);
  get("devices_per_node", c.devices_per_node, true);
  get("intra_node_gbps", c.intra_node_gbps, !c.calibrate);
  get("inter_node_gbps", c.inter_node_gbps, !c.calibrate);
  get("price_per_device_hour", c.price_per_device_hour, true);
  MOE_CHECK(c.price_per_device_hour >= 0 && c.devices_per_node >= 1, ConfigError,
            "{}: price_per_device_hour must be >= 0 and devices_per_node >= 1", c.file);
  return c;
}

void calibrate(Cluster& c, Communicator& world) {
  const std::int64_t n = 1024;
  Tensor a = Tensor::zeros({n, n}, DType::f32), b = Tensor::zeros({n, n}, DType::f32), y = Tensor::empty({n, n}, DType::f32);
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
  c.intra_node_gbps = c.inter_node_gbps = 0;
  if (world.size() > 1) {
    Tensor buf = Tensor::zeros({4 << 20}, DType::f32);
    double t_best = 1e30;
    for (int i = 0; i < 3; ++i) {
      world.barrier();
      const double t0 = now();
      world.all_reduce_sum(buf);
      t_best = std::min(t_best, now() - t0);
    }
    const double p = world.size();
    c.intra_node_gbps = c.inter_node_gbps = 2 * (p - 1) / p * double(buf.nbytes()) / t_best / 1e9;
  }
}

std::int64_t active_parameters(const ModelConfig& m) {
  const std::int64_t C = m.d_model, dh = m.d_model / m.n_heads;
  const std::int64_t attn = C * dh * (2 * m.n_heads + 2 * m.n_kv_heads) + 2 * C;  // q, k, v, o and two norms
  std::int64_t total = C + m.vocab_size * C;                                      // final norm, LM head
  for (std::int64_t l = 0; l < m.n_layers; ++l) {
    total += attn;
    if (l < m.dense_layers || m.routed_experts == 0) total += 3 * C * m.ffn_hidden;
    else total += C * m.routed_experts + 3 * C * m.expert_hidden * (m.shared_experts + m.top_k);
  }
  return total;
}

std::int64_t expert_parameters(const ModelConfig& m) {
  return moe_layers(m) * m.routed_experts * 3 * m.d_model * m.expert_hidden;
}

std::int64_t total_parameters(const ModelConfig& m) {
  // The active count holds top_k experts per MoE layer and no embedding.
  return active_parameters(m) - moe_layers(m) * m.top_k * 3 * m.d_model * m.expert_hidden + expert_parameters(m) +
         m.vocab_size * m.d_model;
}

MemoryPerRank memory_per_rank(const Config& cfg, int dp, int ep) {
  const double experts = double(expert_parameters(cfg.model)) / ep, dense = double(total_parameters(cfg.model)) -
                                                                             double(expert_parameters(cfg.model));
  const bool zero = cfg.parallel.zero == 1;
  const int edp = dp / ep;  // ranks holding the same experts (tp = 1)
  return {.weights = 4 * (dense + experts), .gradients = 4 * (dense + experts),
          .optimizer = 8 * (zero ? dense / dp + experts / edp : dense + experts)};
}

double training_flops_per_token(const ModelConfig& m) {
  return 6.0 * double(active_parameters(m)) + 12.0 * double(m.n_layers * m.n_heads * (m.d_model / m.n_heads) * m.seq_len);
}

std::string human_bytes(double b) {
  const char* unit[] = {"B", "KB", "MB", "GB"};
  int u = 0;
  while (b >= 1000 && u < 3) b /= 1000, ++u;
  return fmt::format("{:.1f} {}", b, unit[u]);
}

CostCounters& CostCounters::operator+=(const CostCounters& o) {
  compute += o.compute, communication += o.communication, evaluation += o.evaluation, checkpoint += o.checkpoint;
  tokens += o.tokens, flops += o.flops, train_seconds += o.train_seconds;
  return *this;
}

nlohmann::json cost_json(const Cluster& c, const CostCounters& k, const Config& cfg, int world) {
  const double dh = k.device_hours(), price = c.price_per_device_hour;
  const double peak = c.peak_tflops(cfg.precision) * 1e12;
  const double achieved = k.train_seconds > 0 ? k.flops / k.train_seconds / world : 0;  // FLOP/s per device
  const double tokens_per_device_hour = dh > 0 ? k.tokens / dh : 0;
  nlohmann::json j = {
      {"cluster", {{"name", c.name}, {"device", c.device}, {"file", c.file}, {"price_per_device_hour", price},
                   {"peak_tflops", c.peak_tflops(cfg.precision)}, {"calibrated", c.calibrate},
                   {"interconnect_gbps", c.inter_node_gbps}}},
      {"devices", world},
      {"device_hours", {{"total", dh}, {"compute", k.compute}, {"communication", k.communication},
                        {"evaluation", k.evaluation}, {"checkpoint", k.checkpoint}}},
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
    j["projection"] = {{"target_tokens", target}, {"device_hours", hours}, {"wall_hours", hours / world},
                       {"cost_usd", hours * price}};
  }
  return j;
}

std::string cost_text(const nlohmann::json& r) {
  const auto& d = r["device_hours"];
  const double total = d["total"].get<double>();
  auto share = [&](const char* k) { return total > 0 ? 100 * d[k].get<double>() / total : 0.0; };
  std::string s = fmt::format(
      "\n== cost report ({}: {}, ${}/device-hour{}) ==\n"
      "device-hours      {:.6f} on {} devices: compute {:.0f}%, communication {:.0f}%, evaluation {:.0f}%, checkpoints {:.0f}%\n"
      "tokens            {:.0f} ({:.3g} FLOP/token, {} active parameters)\n"
      "throughput        {:.3g} TFLOP/s per device, MFU {:.1f}% of {:.3g} TFLOP/s\n"
      "cost              ${:.6f} (${:.4f} per million tokens)\n",
      r["cluster"]["name"].get<std::string>(), r["cluster"]["device"].get<std::string>(),
      r["cluster"]["price_per_device_hour"].get<double>(), r["cluster"]["calibrated"].get<bool>() ? ", peak measured at start" : "",
      total, r["devices"].get<int>(), share("compute"), share("communication"), share("evaluation"), share("checkpoint"),
      r["tokens"].get<double>(), r["flops_per_token"].get<double>(), r["active_parameters"].get<std::int64_t>(),
      r["achieved_tflops_per_device"].get<double>(), 100 * r["mfu"].get<double>(), r["cluster"]["peak_tflops"].get<double>(),
      r["cost_usd"].get<double>(), r["usd_per_million_tokens"].get<double>());
  if (r.contains("projection")) {
    const auto& p = r["projection"];
    s += fmt::format("projection        {:.3g} tokens: {:.4g} more device-hours ({:.4g} h on {} devices), ${:.4g} at this rate\n",
                     p["target_tokens"].get<double>(), p["device_hours"].get<double>(), p["wall_hours"].get<double>(),
                     r["devices"].get<int>(), p["cost_usd"].get<double>());
  }
  return s;
}

}  // namespace moe
