#include "trainer/hf_config.h"

#include <fmt/format.h>

#include <algorithm>

#include "kernels/error.h"

namespace moe {

namespace {
// YaRN as Hugging Face's rope_scaling (null without scaling); only the keys set.
nlohmann::json rope_scaling_json(const ModelConfig& m) {
  if (m.rope_factor <= 1) return nullptr;
  nlohmann::json r = {{"type", "yarn"},
                      {"rope_type", "yarn"},
                      {"factor", m.rope_factor},
                      {"original_max_position_embeddings", m.rope_original_positions},
                      {"beta_fast", m.rope_beta_fast},
                      {"beta_slow", m.rope_beta_slow}};
  if (m.rope_mscale > 0) r["mscale"] = m.rope_mscale;
  if (m.rope_mscale_all_dim > 0) r["mscale_all_dim"] = m.rope_mscale_all_dim;
  if (m.rope_attention_factor > 0) r["attention_factor"] = m.rope_attention_factor;
  return r;
}
}  // namespace

nlohmann::json hf_config_json(const ModelConfig& m) {
  const bool mla = m.attention == AttentionType::mla;
  nlohmann::json j = {{"architectures", {"DeepseekV3ForCausalLM"}},
                      {"model_type", "deepseek_v3"},
                      {"vocab_size", m.vocab_size},
                      {"hidden_size", m.d_model},
                      {"intermediate_size", m.ffn_hidden},
                      {"moe_intermediate_size", m.expert_hidden},
                      {"num_hidden_layers", m.n_layers},
                      {"num_attention_heads", m.n_heads},
                      {"num_key_value_heads", mla ? m.n_heads : m.n_kv_heads},
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
                      {"rope_scaling", rope_scaling_json(m)},
                      {"rope_interleave", true},
                      {"max_position_embeddings", m.seq_len},
                      {"hidden_act", "silu"},
                      {"attention_bias", false},
                      {"tie_word_embeddings", false},
                      {"torch_dtype", "float32"}};
  if (mla) {
    j["q_lora_rank"] = m.q_lora_rank > 0 ? nlohmann::json(m.q_lora_rank) : nlohmann::json(nullptr);
    j["kv_lora_rank"] = m.kv_lora_rank;
    j["qk_nope_head_dim"] = m.qk_nope_head_dim;
    j["qk_rope_head_dim"] = m.qk_rope_head_dim;
    j["v_head_dim"] = m.v_head_dim;
  } else {
    // DeepseekV3 itself has only MLA: transformers cannot build a GQA model from this file.
    j["head_dim"] = m.d_model / m.n_heads;
    j["attention"] = "gqa";
  }
  return j;
}

namespace {
// Typed reads of config.json keys, each failure one line naming the file and the key.
struct HfKeys {
  const nlohmann::json& j;
  const std::string& file;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(fmt::format("{}: {}: {}", file, key, what));
  }
  template <class T>
  T get(const std::string& key) const {
    if (!j.contains(key) || j[key].is_null()) fail(key, "missing");
    try {
      return j[key].get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(key, "has the wrong type");
    }
  }
  template <class T>
  T get(const std::string& key, T fallback) const {
    return j.contains(key) && !j[key].is_null() ? get<T>(key) : fallback;
  }
};
}  // namespace

namespace {
// rope_scaling of type yarn into m (ConfigError naming the key for another type);
// original_max_position_embeddings defaults to the model's max_positions, as in transformers.
void read_yarn(const nlohmann::json& r, const std::string& file, std::int64_t max_positions, ModelConfig& m) {
  const HfKeys k{r, file};
  if (!r.is_object()) k.fail("rope_scaling", "not an object");
  const std::string type = k.get<std::string>("rope_type", k.get<std::string>("type", ""));
  if (type != "yarn") k.fail("rope_scaling.type", fmt::format("'{}': moe implements yarn", type));
  if (!k.get<bool>("truncate", true)) k.fail("rope_scaling.truncate", "moe truncates YaRN's correction range");
  m.rope_factor = k.get<double>("factor");
  m.rope_original_positions = k.get<std::int64_t>("original_max_position_embeddings", max_positions);
  m.rope_beta_fast = k.get<double>("beta_fast", 32.0);
  m.rope_beta_slow = k.get<double>("beta_slow", 1.0);
  m.rope_mscale = k.get<double>("mscale", 0.0);
  m.rope_mscale_all_dim = k.get<double>("mscale_all_dim", 0.0);
  m.rope_attention_factor = k.get<double>("attention_factor", 0.0);
}
}  // namespace

ModelConfig model_from_hf(const nlohmann::json& hf, const std::string& file) {
  const HfKeys k{hf, file};
  if (!hf.is_object()) k.fail("config.json", "not a JSON object");
  const std::string type = k.get<std::string>("model_type");
  if (type != "deepseek_v3")
    k.fail("model_type", fmt::format("'{}': moe imports deepseek_v3 models (DeepSeek-V3, Kimi K2, Moonlight)", type));
  if (k.get<bool>("tie_word_embeddings", false)) k.fail("tie_word_embeddings", "tied embeddings are not supported");
  if (k.get<std::string>("hidden_act", "silu") != "silu") k.fail("hidden_act", "moe's FFNs are SwiGLU (silu)");
  if (k.get<bool>("attention_bias", false)) k.fail("attention_bias", "attention projections have no bias here");
  if (k.get<std::string>("topk_method", "noaux_tc") != "noaux_tc")
    k.fail("topk_method", "moe routes as DeepSeek-V3 does (noaux_tc: biased top-k in the best groups)");
  if (k.get<bool>("rope_interleave", true) != true)
    k.fail("rope_interleave", "moe applies RoPE to interleaved pairs, as DeepSeek-V3 does");
  ModelConfig m;
  m.attention = AttentionType::mla;
  m.vocab_size = k.get<std::int64_t>("vocab_size");
  m.d_model = k.get<std::int64_t>("hidden_size");
  m.ffn_hidden = k.get<std::int64_t>("intermediate_size");
  m.expert_hidden = k.get<std::int64_t>("moe_intermediate_size");
  m.n_layers = k.get<std::int64_t>("num_hidden_layers");
  m.n_heads = k.get<std::int64_t>("num_attention_heads");
  m.n_kv_heads = m.n_heads;
  m.q_lora_rank = k.get<std::int64_t>("q_lora_rank", 0);
  m.kv_lora_rank = k.get<std::int64_t>("kv_lora_rank");
  m.qk_nope_head_dim = k.get<std::int64_t>("qk_nope_head_dim");
  m.qk_rope_head_dim = k.get<std::int64_t>("qk_rope_head_dim");
  m.v_head_dim = k.get<std::int64_t>("v_head_dim");
  m.shared_experts = k.get<std::int64_t>("n_shared_experts", 0);
  m.routed_experts = k.get<std::int64_t>("n_routed_experts");
  m.top_k = k.get<std::int64_t>("num_experts_per_tok");
  m.dense_layers = k.get<std::int64_t>("first_k_dense_replace", 0);
  m.n_groups = k.get<std::int64_t>("n_group", 1);
  m.topk_groups = k.get<std::int64_t>("topk_group", 1);
  m.routed_scaling_factor = k.get<double>("routed_scaling_factor", 1.0);
  m.router_normalize = k.get<bool>("norm_topk_prob", true);
  const std::string scoring = k.get<std::string>("scoring_func", "sigmoid");
  if (scoring != "sigmoid" && scoring != "softmax") k.fail("scoring_func", fmt::format("'{}'", scoring));
  m.router = scoring == "sigmoid" ? RouterType::sigmoid : RouterType::softmax;
  m.norm_eps = k.get<double>("rms_norm_eps", 1e-6);
  m.rope_theta = k.get<double>("rope_theta", 10000.0);
  m.seq_len = std::min<std::int64_t>(k.get<std::int64_t>("max_position_embeddings", 4096), 4096);
  if (hf.contains("rope_scaling") && !hf["rope_scaling"].is_null())
    read_yarn(hf["rope_scaling"], file, k.get<std::int64_t>("max_position_embeddings", 4096), m);
  m.aux_loss_coef = 0;  // DeepSeek-V3's own sequence-wise loss weight is a training choice (model.aux_loss_coef)
  // Multi-token prediction: as config.json declares it (moe import keeps it only where the
  // directory holds its layers: transformers' save_pretrained writes none).
  m.mtp_depth = k.get<std::int64_t>("num_nextn_predict_layers", 0);
  return m;
}

}  // namespace moe
