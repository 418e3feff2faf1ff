#include "trainer/hf_import.h"

#include <fmt/format.h>

#include <algorithm>
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
#include "model/param.h"
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

// Every tensor of the directory, by name, with the file holding it (headers only: the files
// are mapped, and a tensor is read when asked for).
struct HfTensors {
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> where;
  explicit HfTensors(const std::string& dir) {
    for (const std::string& f : safetensors_files(dir)) {
      files.push_back(std::make_unique<SafetensorsFile>(f));
      for (const auto& [name, e] : files.back()->entries()) where[name] = files.back().get();
    }
  }
  // That the model's tensor `s` is there at its shape (FP8 with its block scales); the names
  // it reads go into `used`.
  void expect(const TensorSpec& s, const std::string& dir, std::set<std::string>& used) const {
    const auto it = where.find(s.name);
    MOE_CHECK(it != where.end(), CheckpointError, "{}: the model needs {}, which no safetensors file holds",
              files.front()->path(), s.name);
    const SafetensorsFile::Entry& e = it->second->entries().at(s.name);
    MOE_CHECK(e.shape == s.shape, CheckpointError, "{}: {} is {} there, {} in the model config.json gives", dir, s.name,
              shape_str(e.shape), shape_str(s.shape));
    used.insert(s.name);
    if (e.dtype == "F8_E4M3") {
      const std::string scale = s.name + "_scale_inv";
      MOE_CHECK(where.count(scale), CheckpointError, "{}: {} is FP8 without {}", it->second->path(), s.name, scale);
      used.insert(scale);
    }
  }
  // The tensor as f32, dequantised where it is FP8 with block scales.
  Tensor read(const std::string& name) const {
    const SafetensorsFile* f = where.at(name);
    Tensor t = f->read(name);
    if (f->entries().at(name).dtype == "F8_E4M3") {
      const std::string scale = name + "_scale_inv";
      apply_block_scales(t, where.at(scale)->read(scale), name, f->path());
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

std::int64_t numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// Who reads which tensor, and when: each tensor to the rank with the fewest bytes so far (in
// the model's order), then each rank's tensors in runs of at most `bytes` f32 bytes (a tensor
// larger than that alone); round r is every rank's r-th run. The same on every rank.
std::vector<std::vector<std::size_t>> plan_rounds(const std::vector<TensorSpec>& specs, int ranks, double bytes,
                                                  std::vector<int>& owner) {
  const auto P = static_cast<std::size_t>(ranks);
  std::vector<double> load(P, 0), run_bytes(P, 0);
  std::vector<std::vector<std::vector<std::size_t>>> runs(P);
  owner.assign(specs.size(), 0);
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto r = std::size_t(std::min_element(load.begin(), load.end()) - load.begin());
    const double b = 4.0 * double(numel(specs[i].shape));
    owner[i] = int(r), load[r] += b;
    if (runs[r].empty() || (run_bytes[r] + b > bytes && !runs[r].back().empty()))
      runs[r].emplace_back(), run_bytes[r] = 0;
    runs[r].back().push_back(i), run_bytes[r] += b;
  }
  std::vector<std::vector<std::size_t>> rounds;
  for (std::size_t k = 0;; ++k) {
    std::vector<std::size_t> round;
    for (const auto& mine : runs)
      if (k < mine.size()) round.insert(round.end(), mine[k].begin(), mine[k].end());
    if (round.empty()) return rounds;
    std::sort(round.begin(), round.end());
    rounds.push_back(std::move(round));
  }
}

// The model section of config.json as moe's config, and the class's model_type.
Config import_config(const std::string& hf_dir, std::string& model_type) {
  const std::string config_file = (fs::path(hf_dir) / "config.json").string();
  std::ifstream in(config_file);
  MOE_CHECK(in.good(), ConfigError, "{}: cannot read; is {} a Hugging Face model directory?", config_file, hf_dir);
  const nlohmann::json hf = nlohmann::json::parse(in, nullptr, false);
  Config cfg = parse_config("", config_file);
  cfg.model = model_from_hf(hf, config_file);
  model_type = hf.value("model_type", "");
  return parse_config(config_to_yaml(cfg),
                      config_file + " (as moe's config)");  // the config's own rules, on the import
}

// config.json's multi-token prediction without its layers (a save_pretrained model): none.
void drop_absent_mtp(Config& cfg, const HfTensors& files, const std::string& hf_dir, std::set<std::string>& skipped) {
  if (cfg.model.mtp_depth == 0 || files.where.count(fmt::format("model.layers.{}.eh_proj.weight", cfg.model.n_layers)))
    return;
  skipped.insert(fmt::format("multi-token prediction (num_nextn_predict_layers {}: no weights in {})",
                             cfg.model.mtp_depth, hf_dir));
  cfg.model.mtp_depth = 0;
}
}  // namespace

ImportResult import_hf(const std::string& hf_dir, const std::string& out_dir, Communicator& comm, double round_bytes) {
  std::string model_type;
  Config cfg = import_config(hf_dir, model_type);
  const bool biases = hf_has_router_bias(model_type);  // else moe's start at zero
  const HfTensors files(hf_dir);
  std::set<std::string> used, skipped;
  drop_absent_mtp(cfg, files, hf_dir, skipped);
  std::vector<TensorSpec> specs;
  {
    const Param::ShapesOnly shapes_only;  // the tensor list, no model in memory
    Transformer model(cfg.model);
    specs = hf_tensor_specs(model);
  }
  // Everything is checked before anything is written.
  std::vector<std::string> theirs;  // each tensor's name in the files
  for (const TensorSpec& s : specs) theirs.push_back(hf_tensor_name(s.name, model_type));
  for (std::size_t i = 0; i < specs.size(); ++i)
    if (specs[i].weight || biases) files.expect({theirs[i], specs[i].shape, specs[i].weight}, hf_dir, used);
  for (const auto& [name, file] : files.where)
    MOE_CHECK(used.count(name) || skippable(name, cfg.model, skipped), CheckpointError,
              "{}: tensor {} is not part of the model moe builds from config.json", file->path(), name);

  ImportResult r;
  r.checkpoint = ckpt::step_file(out_dir, 0), r.config = (fs::path(out_dir) / "config.yaml").string();
  r.tensors = specs.size(), r.skipped.assign(skipped.begin(), skipped.end());
  std::vector<ckpt::Dataset> datasets;
  for (const TensorSpec& s : specs) {
    datasets.push_back({(s.weight ? "weights/" : "buffers/") + s.name, s.shape});
    r.bytes += 4.0 * double(numel(s.shape));
  }
  std::vector<int> owner;
  const auto rounds = plan_rounds(specs, comm.size(), round_bytes, owner);
  std::vector<Tensor> held;  // this rank's tensors of the round being written
  const auto fill = [&](std::size_t round) {
    held.clear();
    std::vector<ckpt::Slice> mine;
    for (std::size_t i : rounds[round]) {
      if (owner[i] != comm.rank()) continue;
      const TensorSpec& s = specs[i];
      held.push_back(s.weight || biases ? files.read(theirs[i]) : Tensor::zeros(s.shape, DType::f32));
      mine.push_back({datasets[i].name, 0, held.back().numel(), held.back().data<float>(), {}, {}});
    }
    return mine;
  };
  const std::string yaml = config_to_yaml(cfg);
  RunMeta meta;
  meta.config_yaml = yaml, meta.layout = "imported from " + hf_dir;
  if (comm.rank() == 0) fs::create_directories(out_dir);
  comm.barrier();
  ckpt::write_in_rounds(ckpt::temp_file(r.checkpoint), comm, meta.to_meta(), datasets, rounds, fill);
  comm.barrier();
  if (comm.rank() == 0) {
    ckpt::commit(out_dir, r.checkpoint, 1);
    write_atomically(r.config, yaml);
  }
  comm.barrier();
  return r;
}

}  // namespace moe
