#include "trainer/export.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
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
}  // namespace

ExportResult export_safetensors(const std::string& checkpoint, const std::string& out_dir, const std::string& tokenizer,
                                bool with_mtp) {
  const RunMeta meta = read_run_meta(checkpoint);
  const Config cfg = parse_config(meta.config_yaml, checkpoint + " (its config)");
  std::map<std::string, Tensor> tensors = ckpt::read_group(checkpoint, "weights");
  for (auto& [name, t] : ckpt::read_group(checkpoint, "buffers")) tensors.emplace(name, std::move(t));
  select_mtp(tensors, cfg.model, with_mtp);
  nlohmann::json config = hf_config_json(cfg.model);  // (refused before anything is written)
  tensors = to_class_names(std::move(tensors), config["model_type"], checkpoint);

  // safetensors: an 8-byte little-endian header size, a JSON header (name -> dtype, shape,
  // byte range in the data), the data. Names in order, ranges back to back.
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}, {"source", checkpoint}, {"step", std::to_string(meta.step)}};
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

  std::filesystem::create_directories(out_dir);
  ExportResult r{.safetensors = out_dir + "/model.safetensors",
                 .config = out_dir + "/config.json",
                 .tokenizer = "",
                 .tensors = tensors.size(),
                 .bytes = double(offset)};
  write_atomically(r.safetensors, prefix + text, order);
  config["num_nextn_predict_layers"] = with_mtp ? cfg.model.mtp_depth : 0;
  config["moe_export"] = {{"step", meta.step}, {"format", "moe export --format safetensors"}};
  write_atomically(r.config, config.dump(2) + "\n");
  const std::string source = !tokenizer.empty() ? tokenizer : cfg.data.dir + "/tokenizer.model";
  MOE_CHECK(tokenizer.empty() || std::filesystem::exists(source), ConfigError,
            "moe export --tokenizer {}: no such file", source);
  if (std::filesystem::exists(source)) {
    r.tokenizer = out_dir + "/tokenizer.model";
    std::ifstream in(source, std::ios::binary);
    const std::string model((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    write_atomically(r.tokenizer, model);
    write_atomically(out_dir + "/tokenizer_config.json", tokenizer_config(cfg.model).dump(2) + "\n");
  }
  return r;
}

}  // namespace moe
