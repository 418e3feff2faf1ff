#include "trainer/export.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "trainer/run_meta.h"

namespace moe {
namespace {

void write_atomically(const std::string& path, const std::string& header, const std::vector<const Tensor*>& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const Tensor* t : data)
      out.write(static_cast<const char*>(t->raw()), static_cast<std::streamsize>(t->nbytes()));
    out.flush();
    MOE_CHECK(out.good(), CheckpointError, "{}: cannot write (disk full?)", tmp);
  }
  std::filesystem::rename(tmp, path);
}

// Hugging Face's names for the model's shape (DeepseekV3Config), plus what they cannot say.
nlohmann::json hf_config(const ModelConfig& m, std::int64_t step) {
  return {{"architectures", {"DeepseekV3ForCausalLM"}},
          {"model_type", "deepseek_v3"},
          {"vocab_size", m.vocab_size},
          {"hidden_size", m.d_model},
          {"intermediate_size", m.ffn_hidden},
          {"moe_intermediate_size", m.expert_hidden},
          {"num_hidden_layers", m.n_layers},
          {"num_attention_heads", m.n_heads},
          {"num_key_value_heads", m.n_kv_heads},
          {"head_dim", m.d_model / m.n_heads},
          {"n_shared_experts", m.shared_experts},
          {"n_routed_experts", m.routed_experts},
          {"num_experts_per_tok", m.top_k},
          {"first_k_dense_replace", m.dense_layers},
          {"n_group", m.n_groups},
          {"topk_group", m.topk_groups},
          {"routed_scaling_factor", m.routed_scaling_factor},
          {"norm_topk_prob", m.router_normalize},
          {"scoring_func", m.router == RouterType::sigmoid ? "sigmoid" : "softmax"},
          {"topk_method", "noaux_tc"},
          {"rms_norm_eps", m.norm_eps},
          {"rope_theta", m.rope_theta},
          {"max_position_embeddings", m.seq_len},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"},
          // DeepSeek-V3 itself uses MLA; this model's attention is GQA with q/k/v/o_proj.
          {"attention", "gqa"},
          {"moe_export", {{"step", step}, {"format", "moe export --format safetensors"}}}};
}

}  // namespace

ExportResult export_safetensors(const std::string& checkpoint, const std::string& out_dir) {
  const RunMeta meta = read_run_meta(checkpoint);
  const Config cfg = parse_config(meta.config_yaml, checkpoint + " (its config)");
  std::map<std::string, Tensor> tensors = ckpt::read_group(checkpoint, "weights");
  for (auto& [name, t] : ckpt::read_group(checkpoint, "buffers")) tensors.emplace(name, std::move(t));

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
                 .tensors = tensors.size(),
                 .bytes = double(offset)};
  write_atomically(r.safetensors, prefix + text, order);
  write_atomically(r.config, hf_config(cfg.model, meta.step).dump(2) + "\n", {});
  return r;
}

}  // namespace moe
