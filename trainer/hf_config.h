// Our model section in Hugging Face's vocabulary (config.json), both ways: `moe export` writes
// it, `moe import` reads it. MLA models are DeepseekV3Config, GQA ones Glm4MoeConfig (GLM-4.5's
// class: the same MoE, with whole-head RoPE). The correspondence is docs/CHECKPOINT.md's.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "config/model_config.h"

namespace moe {

// ConfigError naming the key where no transformers class computes the model (GQA with a
// softmax router, or without a shared expert).
nlohmann::json hf_config_json(const ModelConfig& m);

// A deepseek_v3 or glm4_moe config.json as our ModelConfig (keys it leaves out take the class's
// defaults). ConfigError naming the
// file and the key for what this trainer cannot build the same (another architecture, RoPE
// scaling other than YaRN, tied embeddings, another activation or router). model.seq_len is the smaller of
// max_position_embeddings and 4096 (a training window; set it to fine-tune on longer ones).
ModelConfig model_from_hf(const nlohmann::json& hf, const std::string& file);

// Whether the class of model_type keeps router biases (e_score_correction_bias): DeepseekV2
// and Mixtral do not (moe's are zero there).
bool hf_has_router_bias(const std::string& model_type);
// The name model_type's class gives one of our tensors (hf_tensors): ours, but Mixtral's
// block_sparse_moe.gate and experts.J.w1 / w3 / w2 for gate / up / down.
std::string hf_tensor_name(const std::string& ours, const std::string& model_type);

}  // namespace moe
