// Our model section in Hugging Face's vocabulary (DeepseekV3Config, config.json), both ways:
// `moe export` writes it, `moe import` reads it. The correspondence is docs/CHECKPOINT.md's.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "config/model_config.h"

namespace moe {

nlohmann::json hf_config_json(const ModelConfig& m);

// A DeepseekV3 (model_type deepseek_v3) config.json as our ModelConfig. ConfigError naming the
// file and the key for what this trainer cannot build the same (another architecture, RoPE
// scaling other than YaRN, tied embeddings, another activation or router). model.seq_len is the smaller of
// max_position_embeddings and 4096 (a training window; set it to fine-tune on longer ones).
ModelConfig model_from_hf(const nlohmann::json& hf, const std::string& file);

}  // namespace moe
