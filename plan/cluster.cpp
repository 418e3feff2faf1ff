#include "plan/cluster.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "kernels/error.h"

namespace fs = std::filesystem;

namespace moe {
namespace {

std::string find_cluster_file(const Config& cfg) {
  const std::string& name = cfg.cost.cluster;
  if (name.find('/') != std::string::npos || name.ends_with(".yaml")) return name;
  std::vector<fs::path> tried;
  if (!cfg.source.empty() && fs::exists(cfg.source))
    tried.push_back(fs::path(cfg.source).parent_path() / "clusters" / (name + ".yaml"));
#ifdef MOE_SOURCE_DIR
  tried.push_back(fs::path(MOE_SOURCE_DIR) / "configs" / "clusters" / (name + ".yaml"));
#endif
  for (const auto& p : tried)
    if (fs::exists(p)) return p.string();
  std::string where;
  for (std::size_t i = 0; i < tried.size(); ++i)
    if (i == 0 || fs::weakly_canonical(tried[i]) != fs::weakly_canonical(tried[0]))
      where += (where.empty() ? "" : ", ") + tried[i].string();
  throw ConfigError(
      fmt::format("{}: cost.cluster: no cluster '{}' (looked for {}); name a file in configs/clusters/ or a path",
                  cfg.source, name, where.empty() ? "nothing" : where));
}

}  // namespace

Cluster load_cluster(const Config& cfg) {
  Cluster c;
  c.file = find_cluster_file(cfg);
  MOE_CHECK(fs::is_regular_file(c.file), ConfigError, "{}: not a file; cost.cluster names a cluster YAML file", c.file);
  YAML::Node n;
  try {
    n = YAML::LoadFile(c.file);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}: cannot read the cluster description: {}", c.file, e.what()));
  }
  MOE_CHECK(n.IsMap(), ConfigError, "{}: a cluster description is a mapping of keys", c.file);
  static const std::set<std::string> known = {"name",
                                              "device",
                                              "calibrate",
                                              "peak_bf16_tflops",
                                              "peak_fp8_tflops",
                                              "memory_gb",
                                              "memory_gbps",
                                              "devices_per_node",
                                              "intra_node_gbps",
                                              "inter_node_gbps",
                                              "price_per_device_hour",
                                              "compute_efficiency",
                                              "source",
                                              "notes"};
  for (const auto& kv : n) {
    const std::string key = kv.first.as<std::string>();
    MOE_CHECK(known.count(key), ConfigError, "{}:{}: unknown key '{}' (a misspelling? the keys are docs/CLUSTER.md's)",
              c.file, kv.first.Mark().line + 1, key);
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
  get("memory_gbps", c.memory_gbps, !c.calibrate);
  get("devices_per_node", c.devices_per_node, true);
  get("intra_node_gbps", c.intra_node_gbps, !c.calibrate);
  get("inter_node_gbps", c.inter_node_gbps, !c.calibrate);
  get("price_per_device_hour", c.price_per_device_hour, true);
  get("compute_efficiency", c.compute_efficiency, !c.calibrate);
  MOE_CHECK(
      c.price_per_device_hour >= 0 && c.devices_per_node >= 1 && c.compute_efficiency > 0 && c.compute_efficiency <= 1,
      ConfigError, "{}: price_per_device_hour must be >= 0, devices_per_node >= 1, compute_efficiency in (0, 1]",
      c.file);
  MOE_CHECK(std::isfinite(c.peak_fp8_tflops) && c.peak_fp8_tflops >= 0, ConfigError,
            "{}: peak_fp8_tflops = {} must be a finite number >= 0 (0: no FP8 tensor cores)", c.file,
            c.peak_fp8_tflops);
  // Rates and sizes the plan divides by: finite and positive (a calibrated cluster measures
  // those it leaves out).
  for (const auto& [key, v] : {std::pair{"peak_bf16_tflops", c.peak_bf16_tflops},
                               {"memory_gb", c.memory_gb},
                               {"memory_gbps", c.memory_gbps},
                               {"intra_node_gbps", c.intra_node_gbps},
                               {"inter_node_gbps", c.inter_node_gbps}})
    MOE_CHECK(std::isfinite(v) && (v > 0 || (c.calibrate && !n[key].IsDefined())), ConfigError,
              "{}: {} = {} must be a finite number above 0", c.file, key, v);
  return c;
}

}  // namespace moe
