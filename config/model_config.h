// The model's shape and options: everything an independent implementation needs to build
// the same network (the math is in ../shared/DESIGN.md). Filled from YAML by config/config.cpp.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

enum class RouterType { sigmoid, softmax };
// gqa: RoPE attention with grouped key/value heads. mla: DeepSeek-V3's multi-head latent
// attention (model/mla.h).
enum class AttentionType { gqa, mla };
// The precision of the model's GEMMs (model/linear.h); master weights stay FP32.
enum class Precision { fp32, bf16, fp8 };
constexpr const char* precision_name(Precision p) {
  return p == Precision::fp32 ? "fp32" : p == Precision::bf16 ? "bf16" : "fp8";
}

// LoRA (model/lora.h): low-rank adapters on projections, the base weights frozen.
struct LoraConfig {
  std::int64_t rank = 0;  // 0: off
  double alpha = 16;      // the update is scaled by alpha / rank
  bool rslora = false;    // rank-stabilized (PEFT's use_rslora): by alpha / sqrt(rank) instead
  // Projections to adapt, as HF PEFT's target_modules: a name matches a module whose name
  // is it or ends with "." + it (q_proj, experts.down_proj, layers.3.self_attn.o_proj);
  // all-linear: every projection the model has.
  std::vector<std::string> targets = {"all-linear"};
};

// The factor the adapters' update B A is multiplied by.
inline double lora_scale(const LoraConfig& c) {
  return c.rslora ? c.alpha / std::sqrt(double(c.rank)) : c.alpha / double(c.rank);
}

struct ModelConfig {
  std::int64_t vocab_size = 1024;
  std::int64_t seq_len = 64;
  std::int64_t d_model = 64;
  std::int64_t n_layers = 2;
  std::int64_t n_heads = 4;
  std::int64_t n_kv_heads = 2;
  AttentionType attention = AttentionType::gqa;
  std::int64_t q_lora_rank = 0;         // mla: query compression width (0: queries not compressed)
  std::int64_t kv_lora_rank = 512;      // mla: key/value latent width
  std::int64_t qk_nope_head_dim = 128;  // mla: per-head query/key width without RoPE...
  std::int64_t qk_rope_head_dim = 64;   // ...and with RoPE (a key part shared by all heads)
  std::int64_t v_head_dim = 128;        // mla: per-head value width
  std::int64_t ffn_hidden = 128;        // dense FFN width
  std::int64_t dense_layers = 1;        // the first blocks use a dense FFN, the rest MoE
  std::int64_t routed_experts = 8;
  std::int64_t shared_experts = 1;
  std::int64_t top_k = 2;
  std::int64_t expert_hidden = 32;
  RouterType router = RouterType::sigmoid;
  bool router_normalize = true;
  std::int64_t n_groups = 1;
  std::int64_t topk_groups = 1;
  double routed_scaling_factor = 1.0;
  double bias_update_rate = 1e-3;
  double aux_loss_coef = 0.0;
  double router_z_loss_coef = 0.0;  // ST-MoE's z-loss on the router logits (Megatron: 1e-3); 0: off
  double capacity_factor = 0.0;     // 0 = dropless
  double norm_eps = 1e-6;
  double rope_theta = 10000.0;
  // YaRN RoPE scaling (Hugging Face's rope_scaling of type yarn, DeepSeek-V3's long context),
  // on where rope_factor > 1: frequencies interpolated by rope_factor outside the pairs that
  // turn fast enough within rope_original_positions, cos/sin scaled by the attention factor
  // (rope_attention_factor, or derived from the mscales), and under mla the softmax scale by
  // yarn_mscale(factor, rope_mscale_all_dim)^2.
  double rope_factor = 1.0;
  std::int64_t rope_original_positions = 4096;
  double rope_beta_fast = 32, rope_beta_slow = 1;
  double rope_mscale = 0, rope_mscale_all_dim = 0, rope_attention_factor = 0;  // 0: unset
  double init_std = 0.02;
  // Multi-token prediction (DeepSeek-V3): depths after the last block, each one more block
  // predicting one token further ahead (model/mtp.h); 0: none.
  std::int64_t mtp_depth = 0;
  LoraConfig lora;  // keys lora.*
};

// Per-head widths of queries/keys and of values: d_model / n_heads under gqa.
inline std::int64_t qk_head_dim(const ModelConfig& m) {
  return m.attention == AttentionType::mla ? m.qk_nope_head_dim + m.qk_rope_head_dim : m.d_model / m.n_heads;
}
inline std::int64_t v_head_dim(const ModelConfig& m) {
  return m.attention == AttentionType::mla ? m.v_head_dim : m.d_model / m.n_heads;
}

}  // namespace moe
