#include "trainer/hf_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

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

// Mixtral's MoE is moe's softmax router with normalised gates and nothing else: no shared
// expert, no groups, no scaling, no dense blocks (and no router bias: export checks the values).
bool is_mixtral(const ModelConfig& m) {
  return m.attention == AttentionType::gqa && m.routed_experts > 0 && m.router == RouterType::softmax;
}

const char* hf_class(const ModelConfig& m) {
  if (is_mixtral(m)) {
    const auto need = [](bool ok, const char* key, const char* what) {
      MOE_CHECK(ok, ConfigError, "{}: Mixtral, the GQA class with a softmax router, {}", key, what);
    };
    need(m.shared_experts == 0, "model.shared_experts", "has no shared expert");
    need(m.n_groups == 1, "model.n_groups", "routes without groups");
    need(m.routed_scaling_factor == 1, "model.routed_scaling_factor", "does not scale the gates");
    need(m.router_normalize, "model.router_normalize", "normalises the chosen gates");
    need(m.dense_layers == 0, "model.dense_layers", "has no dense blocks");
    return "MixtralForCausalLM";
  }
  // DeepseekV3 and Glm4Moe route by sigmoid whatever config.json's scoring_func says.
  MOE_CHECK(m.routed_experts == 0 || m.router == RouterType::sigmoid, ConfigError,
            "model.router: softmax: no Hugging Face class computes moe's MLA experts with a softmax router "
            "(DeepseekV3 routes by sigmoid)");
  if (m.attention == AttentionType::mla) return "DeepseekV3ForCausalLM";
  // GLM-4.5's class: DeepSeek-V3's router and MoE behind GQA attention, rotating the whole
  // head with rotate-half pairs when partial_rotary_factor is 1 (its default, 0.5, would load
  // and compute something else).
  MOE_CHECK(m.shared_experts > 0, ConfigError,
            "model.shared_experts: 0: Glm4Moe (the GQA class with DeepSeek-V3's MoE) always has a shared expert");
  return "Glm4MoeForCausalLM";
}

// The keys every exported class reads alike.
nlohmann::json shared_config_json(const ModelConfig& m, const std::string& cls, const char* model_type) {
  return {{"architectures", {cls}},
          {"model_type", model_type},
          {"vocab_size", m.vocab_size},
          {"hidden_size", m.d_model},
          {"num_hidden_layers", m.n_layers},
          {"num_attention_heads", m.n_heads},
          {"num_experts_per_tok", m.top_k},
          {"rms_norm_eps", m.norm_eps},
          {"rope_theta", m.rope_theta},
          {"rope_scaling", rope_scaling_json(m)},
          {"max_position_embeddings", m.seq_len},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"torch_dtype", "float32"}};
}

// MixtralConfig's own keys (its intermediate_size is the experts' width).
nlohmann::json mixtral_config_json(const ModelConfig& m) {
  nlohmann::json j = shared_config_json(m, "MixtralForCausalLM", "mixtral");
  j["intermediate_size"] = m.expert_hidden;
  j["num_key_value_heads"] = m.n_kv_heads;
  j["head_dim"] = m.d_model / m.n_heads;
  j["num_local_experts"] = m.routed_experts;
  j["sliding_window"] = nullptr;
  j["router_jitter_noise"] = 0.0;
  return j;
}

}  // namespace

nlohmann::json hf_config_json(const ModelConfig& m) {
  const bool mla = m.attention == AttentionType::mla;
  const std::string cls = hf_class(m);
  if (cls == "MixtralForCausalLM") return mixtral_config_json(m);
  // DeepseekV3Config's and Glm4MoeConfig's MoE keys, then each one's attention.
  nlohmann::json j = shared_config_json(m, cls, mla ? "deepseek_v3" : "glm4_moe");
  j["intermediate_size"] = m.ffn_hidden;
  j["moe_intermediate_size"] = m.expert_hidden;
  j["num_key_value_heads"] = mla ? m.n_heads : m.n_kv_heads;
  j["n_shared_experts"] = m.shared_experts;
  j["n_routed_experts"] = m.routed_experts;
  j["first_k_dense_replace"] = m.routed_experts > 0 ? m.dense_layers : m.n_layers;
  j["n_group"] = m.n_groups;
  j["topk_group"] = m.topk_groups;
  j["routed_scaling_factor"] = m.routed_scaling_factor;
  j["norm_topk_prob"] = m.router_normalize;
  j["attention_bias"] = false;
  if (mla) {
    j["scoring_func"] = "sigmoid";
    j["topk_method"] = "noaux_tc";
    j["rope_interleave"] = true;
    j["q_lora_rank"] = m.q_lora_rank > 0 ? nlohmann::json(m.q_lora_rank) : nlohmann::json(nullptr);
    j["kv_lora_rank"] = m.kv_lora_rank;
    j["qk_nope_head_dim"] = m.qk_nope_head_dim;
    j["qk_rope_head_dim"] = m.qk_rope_head_dim;
    j["v_head_dim"] = m.v_head_dim;
  } else {
    j["head_dim"] = m.d_model / m.n_heads;
    j["partial_rotary_factor"] = 1.0;
    j["use_qk_norm"] = false;
  }
  return j;
}

bool hf_has_router_bias(const std::string& model_type) {
  return model_type != "deepseek_v2" && model_type != "mixtral";
}

std::string hf_tensor_name(const std::string& ours, const std::string& model_type) {
  if (model_type != "mixtral") return ours;
  static const std::regex expert(R"((model\.layers\.\d+\.)mlp\.experts\.(\d+)\.(gate|up|down)_proj\.weight)"),
      gate(R"((model\.layers\.\d+\.)mlp\.gate\.weight)");
  std::smatch m;
  if (std::regex_match(ours, m, expert)) {
    const std::string w = m[3] == "gate" ? "w1" : m[3] == "down" ? "w2" : "w3";
    return fmt::format("{}block_sparse_moe.experts.{}.{}.weight", m[1].str(), m[2].str(), w);
  }
  if (std::regex_match(ours, m, gate)) return m[1].str() + "block_sparse_moe.gate.weight";
  return ours;
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

namespace {
struct ClassDefaults {
  double norm_eps;
  std::int64_t shared_experts, dense_layers, n_groups, topk_groups;
  double routed_scaling_factor;
};

// DeepseekV3's attention: MLA, RoPE on interleaved pairs.
void read_mla(const HfKeys& k, const nlohmann::json& hf, ModelConfig& m) {
  if (k.get<bool>("rope_interleave", true) != true)
    k.fail("rope_interleave", "moe applies RoPE to interleaved pairs, as DeepSeek-V3 does");
  m.attention = AttentionType::mla;
  m.n_kv_heads = m.n_heads = k.get<std::int64_t>("num_attention_heads");
  // null: queries without a latent; absent: the class's default, 1536
  m.q_lora_rank = hf.contains("q_lora_rank") ? k.get<std::int64_t>("q_lora_rank", 0) : 1536;
  m.kv_lora_rank = k.get<std::int64_t>("kv_lora_rank", 512);
  m.qk_nope_head_dim = k.get<std::int64_t>("qk_nope_head_dim", 128);
  m.qk_rope_head_dim = k.get<std::int64_t>("qk_rope_head_dim", 64);
  m.v_head_dim = k.get<std::int64_t>("v_head_dim", 128);
}

// DeepseekV2's router as moe's softmax one: greedy top-k (DeepSeek-V2-Lite), no selection
// bias, the gates neither normalised nor anything but scaled (the class ignores norm_topk_prob).
void read_v2_routing(const HfKeys& k) {
  const std::string method = k.get<std::string>("topk_method", "greedy");
  if (method != "greedy")
    k.fail("topk_method", fmt::format("'{}': DeepSeek-V2 scores a group by its best expert; moe's groups by their top "
                                      "two (greedy, DeepSeek-V2-Lite's, is moe's with one group)",
                                      method));
  if (k.get<bool>("norm_topk_prob", false))
    k.fail("norm_topk_prob", "transformers' DeepseekV2 does not normalise the gates; moe would");
}

void read_gqa_heads(const HfKeys& k, ModelConfig& m);

// Mixtral as moe's GQA with a softmax router: normalised top-k gates, no shared expert, no
// groups or scaling, no dense blocks, no router bias (moe's start at zero). Its
// intermediate_size is the experts' width.
ModelConfig mixtral_from_hf(const HfKeys& k, const nlohmann::json& hf, const std::string& file) {
  if (hf.contains("sliding_window") && !hf["sliding_window"].is_null())
    k.fail("sliding_window", "moe's attention sees the whole sequence");
  ModelConfig m;
  read_gqa_heads(k, m);
  m.vocab_size = k.get<std::int64_t>("vocab_size");
  m.d_model = k.get<std::int64_t>("hidden_size");
  m.ffn_hidden = m.expert_hidden = k.get<std::int64_t>("intermediate_size");
  m.n_layers = k.get<std::int64_t>("num_hidden_layers");
  m.n_heads = k.get<std::int64_t>("num_attention_heads");
  m.routed_experts = k.get<std::int64_t>("num_local_experts", 8);
  m.top_k = k.get<std::int64_t>("num_experts_per_tok", 2);
  m.dense_layers = m.shared_experts = 0;
  m.router = RouterType::softmax;
  m.router_normalize = true;
  m.norm_eps = k.get<double>("rms_norm_eps", 1e-5);
  m.rope_theta = k.get<double>("rope_theta", 1e6);
  m.seq_len = std::min<std::int64_t>(k.get<std::int64_t>("max_position_embeddings", 4096), 4096);
  if (hf.contains("rope_scaling") && !hf["rope_scaling"].is_null())
    read_yarn(hf["rope_scaling"], file, k.get<std::int64_t>("max_position_embeddings", 4096), m);
  m.aux_loss_coef = 0;
  return m;
}

// Glm4Moe's attention as moe's GQA: whole-head RoPE (rotate-half), no q/k norms, head_dim
// hidden_size / heads. The released GLM-4.5 rotates half of each head and has q/k/v biases:
// refused here by the key that differs.
void read_glm_attention(const HfKeys& k, ModelConfig& m) {
  const double rotary = k.get<double>("partial_rotary_factor", 0.5);
  if (rotary != 1.0) k.fail("partial_rotary_factor", fmt::format("{}: moe rotates the whole head (1.0)", rotary));
  if (k.get<bool>("use_qk_norm", false)) k.fail("use_qk_norm", "moe's attention has no query/key norms");
  read_gqa_heads(k, m);
}

// GQA heads as moe has them: hidden_size / num_attention_heads wide.
void read_gqa_heads(const HfKeys& k, ModelConfig& m) {
  m.attention = AttentionType::gqa;
  m.n_kv_heads = k.get<std::int64_t>("num_key_value_heads", 8);
  const std::int64_t heads = k.get<std::int64_t>("num_attention_heads"), width = k.get<std::int64_t>("hidden_size");
  if (k.get<std::int64_t>("head_dim", width / heads) * heads != width)
    k.fail("head_dim", fmt::format("{}: moe's GQA heads are hidden_size / num_attention_heads = {} wide",
                                   k.get<std::int64_t>("head_dim", 0), width / heads));
}
}  // namespace

ModelConfig model_from_hf(const nlohmann::json& hf, const std::string& file) {
  const HfKeys k{hf, file};
  if (!hf.is_object()) k.fail("config.json", "not a JSON object");
  const std::string type = k.get<std::string>("model_type");
  const bool glm = type == "glm4_moe", v2 = type == "deepseek_v2";
  if (type != "deepseek_v3" && !glm && !v2 && type != "mixtral")
    k.fail("model_type", fmt::format("'{}': moe imports deepseek_v3 (DeepSeek-V3, Kimi K2, Moonlight), deepseek_v2 "
                                     "with greedy routing (DeepSeek-V2-Lite), glm4_moe with whole-head RoPE and no "
                                     "attention biases, and mixtral",
                                     type));
  if (k.get<bool>("tie_word_embeddings", false)) k.fail("tie_word_embeddings", "tied embeddings are not supported");
  if (k.get<std::string>("hidden_act", "silu") != "silu") k.fail("hidden_act", "moe's FFNs are SwiGLU (silu)");
  if (k.get<bool>("attention_bias", false)) k.fail("attention_bias", "attention projections have no bias here");
  if (type == "mixtral") return mixtral_from_hf(k, hf, file);
  if (v2) read_v2_routing(k);
  else if (k.get<std::string>("topk_method", "noaux_tc") != "noaux_tc")
    k.fail("topk_method", "moe routes as DeepSeek-V3 does (noaux_tc: biased top-k in the best groups)");
  // Keys config.json leaves out take the class's defaults (transformers' configuration_*.py),
  // which differ between them.
  const ClassDefaults d = glm  ? ClassDefaults{1e-5, 1, 1, 1, 1, 1.0}
                          : v2 ? ClassDefaults{1e-6, 2, 0, 1, 1, 1.0}
                               : ClassDefaults{1e-6, 1, 3, 8, 4, 2.5};
  ModelConfig m;
  if (glm) read_glm_attention(k, m);
  else read_mla(k, hf, m);
  m.vocab_size = k.get<std::int64_t>("vocab_size");
  m.d_model = k.get<std::int64_t>("hidden_size");
  m.ffn_hidden = k.get<std::int64_t>("intermediate_size");
  m.expert_hidden = k.get<std::int64_t>("moe_intermediate_size");
  m.n_layers = k.get<std::int64_t>("num_hidden_layers");
  m.n_heads = k.get<std::int64_t>("num_attention_heads");
  m.shared_experts = k.get<std::int64_t>("n_shared_experts", d.shared_experts);
  m.routed_experts = k.get<std::int64_t>("n_routed_experts");
  m.top_k = k.get<std::int64_t>("num_experts_per_tok");
  m.dense_layers = k.get<std::int64_t>("first_k_dense_replace", d.dense_layers);
  m.n_groups = k.get<std::int64_t>("n_group", d.n_groups);
  m.topk_groups = k.get<std::int64_t>("topk_group", d.topk_groups);
  m.routed_scaling_factor = k.get<double>("routed_scaling_factor", d.routed_scaling_factor);
  m.router_normalize = !v2 && k.get<bool>("norm_topk_prob", true);
  // (transformers' DeepseekV3 and Glm4Moe route by sigmoid whatever scoring_func says, its
  // DeepseekV2 by softmax)
  const std::string scoring = k.get<std::string>("scoring_func", v2 ? "softmax" : "sigmoid");
  if (scoring != (v2 ? "softmax" : "sigmoid"))
    k.fail("scoring_func", fmt::format("'{}': the class routes by {}", scoring, v2 ? "softmax" : "sigmoid"));
  m.router = v2 ? RouterType::softmax : RouterType::sigmoid;
  m.norm_eps = k.get<double>("rms_norm_eps", d.norm_eps);
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
