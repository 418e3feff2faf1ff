#include "trainer/hf_import.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "checkpoint/checkpoint.h"
#include "checkpoint/store.h"
#include "comm/communicator.h"
#include "config/config.h"
#include "model/hf_names.h"
#include "trainer/atomic_file.h"
#include "trainer/hf_config.h"
#include "trainer/run_meta.h"
#include "trainer/safetensors.h"

namespace moe {

namespace {
namespace fs = std::filesystem;

// w (R,C) *= its 128x128 block's scale: DeepSeek-V3's FP8 release stores weight_scale_inv
// (ceil(R/128), ceil(C/128)), the factor that turns the E4M3 codes back into weights.
void apply_block_scales(Tensor& w, const Tensor& scale, const std::string& name, const std::string& file) {
  MOE_CHECK(w.ndim() == 2 && scale.ndim() == 2 && scale.size(0) == (w.size(0) + 127) / 128 &&
                scale.size(1) == (w.size(1) + 127) / 128,
            CheckpointError, "{}: {}_scale_inv is {}, not one scale per 128x128 block of {}", file, name,
            scale.describe(), w.describe());
  const std::int64_t R = w.size(0), C = w.size(1), T = scale.size(1);
  float* d = w.data<float>();
  const float* s = scale.data<float>();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t c = 0; c < C; ++c) d[r * C + c] *= s[(r / 128) * T + c / 128];
}

// Every tensor of the directory, by name, with the file holding it.
struct HfTensors {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> where;
  explicit HfTensors(const std::string& dir) {
    for (const std::string& f : safetensors_files(dir)) {
      files.push_back(std::make_unique<SafetensorsFile>(f));
      for (const auto& [name, e] : files.back()->entries()) where[name] = files.back().get();
    }
  }
  // The tensor as f32, dequantised where it is FP8 with block scales.
  Tensor read(const std::string& name, std::set<std::string>& used) const {
    const auto it = where.find(name);
    MOE_CHECK(it != where.end(), CheckpointError, "{}: the model needs {}, which no safetensors file holds",
              files.front()->path(), name);
    used.insert(name);
    Tensor t = it->second->read(name);
    if (it->second->entries().at(name).dtype == "F8_E4M3") {
      const std::string scale = name + "_scale_inv";
      MOE_CHECK(where.count(scale), CheckpointError, "{}: {} is FP8 without {}", it->second->path(), name, scale);
      used.insert(scale);
      apply_block_scales(t, where.at(scale)->read(scale), name, it->second->path());
    }
    return t;
  }
};

// HF tensors the model leaves out on purpose: multi-token-prediction layers past those it
// builds, each depth's copies of the shared embedding and head (DeepSeek's release stores
// them under the depth; moe shares the model's), rotary caches. Anything else unread is an
// error.
bool skippable(const std::string& name, const ModelConfig& c, std::set<std::string>& skipped) {
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.*))");
  std::smatch m;
  if (std::regex_match(name, m, layer) && std::stoll(m[1]) >= c.n_layers) {
    if (std::stoll(m[1]) < c.n_layers + c.mtp_depth)
      return m[2] == "embed_tokens.weight" || m[2] == "shared_head.head.weight";
    skipped.insert(fmt::format("model.layers.{}. (multi-token prediction)", m[1].str()));
    return true;
  }
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}
}  // namespace

ImportResult import_hf(const std::string& hf_dir, const std::string& out_dir) {
  const std::string config_file = (fs::path(hf_dir) / "config.json").string();
  std::ifstream in(config_file);
  MOE_CHECK(in.good(), ConfigError, "{}: cannot read; is {} a Hugging Face model directory?", config_file, hf_dir);
  const nlohmann::json hf = nlohmann::json::parse(in, nullptr, false);
  Config cfg = parse_config("", config_file);
  cfg.model = model_from_hf(hf, config_file);
  cfg = parse_config(config_to_yaml(cfg), config_file + " (as moe's config)");  // the config's own rules, on the import

  const HfTensors files(hf_dir);
  std::set<std::string> used, skipped;
  // config.json's multi-token prediction without its layers (a save_pretrained model): none.
  if (cfg.model.mtp_depth > 0 &&
      !files.where.count(fmt::format("model.layers.{}.eh_proj.weight", cfg.model.n_layers))) {
    skipped.insert(fmt::format("multi-token prediction (num_nextn_predict_layers {}: no weights in {})",
                               cfg.model.mtp_depth, hf_dir));
    cfg.model.mtp_depth = 0;
  }
  const std::string yaml = config_to_yaml(cfg);
  Transformer model(cfg.model);
  std::vector<ckpt::Dataset> datasets;
  std::vector<ckpt::Slice> slices;
  ImportResult r;
  for (auto& t : hf_tensors(model)) {
    const Tensor v = files.read(t.name, used);
    MOE_CHECK(v.shape() == t.value.shape(), CheckpointError, "{}: {} is {} there, {} in the model config.json gives",
              hf_dir, t.name, shape_str(v.shape()), shape_str(t.value.shape()));
    t.value.copy_from(v);
    const std::string dataset = (t.grad.defined() ? "weights/" : "buffers/") + t.name;
    datasets.push_back({dataset, t.value.shape()});
    slices.push_back({dataset, 0, t.value.numel(), t.value.data<float>(), {}, {}});
    r.bytes += double(t.value.nbytes());
  }
  for (const auto& [name, file] : files.where)
    MOE_CHECK(used.count(name) || skippable(name, cfg.model, skipped), CheckpointError,
              "{}: tensor {} is not part of the model moe builds from config.json", file->path(), name);

  fs::create_directories(out_dir);
  r.checkpoint = ckpt::step_file(out_dir, 0), r.config = (fs::path(out_dir) / "config.yaml").string();
  r.tensors = datasets.size(), r.skipped.assign(skipped.begin(), skipped.end());
  RunMeta meta;
  meta.config_yaml = yaml, meta.layout = "imported from " + hf_dir;
  SelfCommunicator self;
  ckpt::write(ckpt::temp_file(r.checkpoint), self, meta.to_meta(), datasets, slices);
  ckpt::commit(out_dir, r.checkpoint, 1);
  write_atomically(r.config, yaml);
  return r;
}

}  // namespace moe
