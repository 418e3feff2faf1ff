#include "trainer/export.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "data/tokenizer.h"
#include "model/lora.h"
#include "trainer/atomic_file.h"
#include "trainer/hf_config.h"
#include "trainer/run_meta.h"

namespace moe {
namespace {
// transformers' LlamaTokenizer over our SentencePiece model as it is: ids equal
// sentencepiece's encode (legacy handling, no BOS or EOS added).
nlohmann::json tokenizer_config(const ModelConfig& m) {
  return {{"tokenizer_class", "LlamaTokenizer"},
          {"add_bos_token", false},
          {"add_eos_token", false},
          {"legacy", true},
          {"bos_token", nullptr},
          {"eos_token", "</s>"},
          {"unk_token", "<unk>"},
          {"pad_token", nullptr},
          {"model_max_length", m.seq_len},
          {"clean_up_tokenization_spaces", false}};
}
// Multi-token prediction's layers out, or in with the shared tensors copied under each depth.
void select_mtp(std::map<std::string, Tensor>& tensors, const ModelConfig& m, bool with_mtp) {
  for (std::int64_t layer = m.n_layers; layer < m.n_layers + m.mtp_depth; ++layer) {
    const std::string prefix = fmt::format("model.layers.{}.", layer);
    if (!with_mtp) {
      std::erase_if(tensors, [&](const auto& kv) { return kv.first.starts_with(prefix); });
      continue;
    }
    tensors.emplace(prefix + "embed_tokens.weight", tensors.at("model.embed_tokens.weight"));
    tensors.emplace(prefix + "shared_head.head.weight", tensors.at("lm_head.weight"));
  }
}
// Our names as the class has them (Mixtral's experts and router), router biases left out where
// the class has none: they must be zero there (auxiliary-loss-free balancing moves them).
std::map<std::string, Tensor> to_class_names(std::map<std::string, Tensor> tensors, const std::string& model_type,
                                             const std::string& checkpoint) {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : tensors) {
    if (name.ends_with("mlp.gate.e_score_correction_bias") && !hf_has_router_bias(model_type)) {
      for (std::int64_t e = 0; e < t.numel(); ++e)
        MOE_CHECK(t.data<float>()[e] == 0, ConfigError,
                  "{}: {} is not zero, and {} has no router bias; train it with model.bias_update_rate=0 (and "
                  "balance with model.aux_loss_coef) to export it",
                  checkpoint, name, model_type);
      continue;
    }
    out.emplace(hf_tensor_name(name, model_type), std::move(t));
  }
  return out;
}

// safetensors (the file): an 8-byte little-endian header size, a JSON header (name -> dtype,
// shape, byte range in the data), the data. Names in order, ranges back to back. Returns the
// data bytes.
double write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                         const nlohmann::json& metadata) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = metadata;
  std::vector<const Tensor*> order;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", "F32"}, {"shape", t.shape()}, {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
    order.push_back(&t);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  std::string prefix(8, '\0');
  const auto n = static_cast<std::uint64_t>(text.size());
  for (int i = 0; i < 8; ++i) prefix[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  write_atomically(path, prefix + text, order);
  return double(offset);
}

const std::string kLoraA = ".lora_A.weight", kLoraB = ".lora_B.weight";

// The adapters' factors taken out of `tensors`, by module ("...q_proj" -> {A, B}).
std::map<std::string, std::pair<Tensor, Tensor>> take_adapters(std::map<std::string, Tensor>& tensors) {
  std::map<std::string, std::pair<Tensor, Tensor>> out;
  for (auto it = tensors.begin(); it != tensors.end();) {
    const std::string& name = it->first;
    const bool a = name.ends_with(kLoraA), b = name.ends_with(kLoraB);
    if (!a && !b) {
      ++it;
      continue;
    }
    auto& pair = out[name.substr(0, name.size() - kLoraA.size())];
    (a ? pair.first : pair.second) = std::move(it->second);
    it = tensors.erase(it);
  }
  return out;
}

// PEFT's adapter directory: its tensors under base_model.model.<the class's module name>, and
// the LoraConfig that rebuilds the same modules (their full names: exactly these, no more).
void write_peft(const std::string& dir, const std::map<std::string, std::pair<Tensor, Tensor>>& adapters,
                const LoraConfig& lora, const std::string& model_type, const std::string& base_dir) {
  std::map<std::string, Tensor> tensors;
  nlohmann::json modules = nlohmann::json::array();
  for (const auto& [module, ab] : adapters) {
    const std::string name = module_name(hf_tensor_name(module + ".weight", model_type));
    tensors.emplace("base_model.model." + name + kLoraA, ab.first);
    tensors.emplace("base_model.model." + name + kLoraB, ab.second);
    modules.push_back(name);
  }
  const nlohmann::json config = {{"peft_type", "LORA"},
                                 {"task_type", "CAUSAL_LM"},
                                 {"r", lora.rank},
                                 {"lora_alpha", lora.alpha},
                                 {"lora_dropout", 0.0},
                                 {"target_modules", modules},
                                 {"bias", "none"},
                                 {"fan_in_fan_out", false},
                                 {"use_rslora", lora.rslora},
                                 {"inference_mode", true},
                                 {"base_model_name_or_path", std::filesystem::absolute(base_dir).string()}};
  std::filesystem::create_directories(dir);
  write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_atomically(dir + "/adapter_config.json", config.dump(2) + "\n");
}
}  // namespace

ExportResult export_safetensors(const std::string& checkpoint, const std::string& out_dir, const std::string& tokenizer,
                                bool with_mtp, LoraExport lora) {
  const RunMeta meta = read_run_meta(checkpoint);
  const Config cfg = parse_config(meta.config_yaml, checkpoint + " (its config)");
  std::map<std::string, Tensor> tensors = ckpt::read_group(checkpoint, "weights");
  for (auto& [name, t] : ckpt::read_group(checkpoint, "buffers")) tensors.emplace(name, std::move(t));
  auto adapters = take_adapters(tensors);
  const double scale = cfg.model.lora.rank > 0 ? lora_scale(cfg.model.lora) : 0.0;
  if (lora == LoraExport::merge)
    for (const auto& [module, ab] : adapters) {
      Tensor& w = tensors.at(module + ".weight");
      w = lora_merged(w, ab.first, ab.second, scale);
    }
  if (!with_mtp)  // MTP's adapters go with its layers
    for (std::int64_t layer = cfg.model.n_layers; layer < cfg.model.n_layers + cfg.model.mtp_depth; ++layer)
      std::erase_if(adapters,
                    [&](const auto& kv) { return kv.first.starts_with(fmt::format("model.layers.{}.", layer)); });
  select_mtp(tensors, cfg.model, with_mtp);
  nlohmann::json config = hf_config_json(cfg.model);  // (refused before anything is written)
  tensors = to_class_names(std::move(tensors), config["model_type"], checkpoint);

  std::filesystem::create_directories(out_dir);
  ExportResult r{
      .safetensors = out_dir + "/model.safetensors",
      .config = out_dir + "/config.json",
      .adapter = "",
      .adapted = adapters.size(),
      .tokenizer = "",
      .tensors = tensors.size(),
      .bytes = write_safetensors(out_dir + "/model.safetensors", tensors,
                                 {{"format", "pt"}, {"source", checkpoint}, {"step", std::to_string(meta.step)}})};
  if (lora == LoraExport::peft && !adapters.empty()) {
    r.adapter = out_dir + "/adapter";
    write_peft(r.adapter, adapters, cfg.model.lora, config["model_type"], out_dir);
  }
  config["num_nextn_predict_layers"] = with_mtp ? cfg.model.mtp_depth : 0;
  config["moe_export"] = {{"step", meta.step}, {"format", "moe export --format safetensors"}};
  write_atomically(r.config, config.dump(2) + "\n");
  const std::string source = !tokenizer.empty() ? tokenizer : data::Tokenizer::in_dir(cfg.data.dir);
  MOE_CHECK(tokenizer.empty() || std::filesystem::exists(source), ConfigError,
            "moe export --tokenizer {}: no such file", source);
  if (std::filesystem::exists(source)) {
    const auto copy = [&](const std::string& from, const std::string& to) {
      std::ifstream in(from, std::ios::binary);
      write_atomically(to, std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()));
    };
    if (data::Tokenizer::is_hf(source)) {  // a model's own tokenizer.json goes back as it came
      r.tokenizer = out_dir + "/tokenizer.json";
      copy(source, r.tokenizer);
      const auto config = std::filesystem::path(source).parent_path() / "tokenizer_config.json";
      if (std::filesystem::exists(config)) copy(config.string(), out_dir + "/tokenizer_config.json");
    } else {
      r.tokenizer = out_dir + "/tokenizer.model";
      copy(source, r.tokenizer);
      write_atomically(out_dir + "/tokenizer_config.json", tokenizer_config(cfg.model).dump(2) + "\n");
    }
  }
  return r;
}

}  // namespace moe
