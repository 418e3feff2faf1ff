#include "plan/counts.h"

#include <algorithm>

#include "model/lora.h"

namespace moe {

bool is_moe_layer(const ModelConfig& m, std::int64_t layer) { return m.routed_experts > 0 && layer >= m.dense_layers; }

std::int64_t blocks(const ModelConfig& m) { return m.n_layers + m.mtp_depth; }

std::int64_t moe_layers(const ModelConfig& m) {
  return m.routed_experts > 0 ? std::max<std::int64_t>(0, blocks(m) - m.dense_layers) : 0;
}

std::int64_t mtp_projection_parameters(const ModelConfig& m) { return 2 * m.d_model * m.d_model; }

std::int64_t attention_matrix_parameters(const ModelConfig& m) {
  const std::int64_t C = m.d_model, H = m.n_heads;
  if (m.attention == AttentionType::gqa) {
    const std::int64_t D = C / H;
    return C * D * (2 * H + 2 * m.n_kv_heads);
  }
  // MLA (DeepSeek-V3): q = W_qb norm(W_qa x) (or W_q x), [k_nope, v] = W_kvb norm(c_kv), with
  // [c_kv, k_rope] = W_kva x, out = W_o att.
  const std::int64_t dqk = m.qk_nope_head_dim + m.qk_rope_head_dim;
  const std::int64_t q = m.q_lora_rank > 0 ? C * m.q_lora_rank + m.q_lora_rank * H * dqk : C * H * dqk;
  const std::int64_t kv =
      C * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim);
  return q + kv + H * m.v_head_dim * C;
}

std::int64_t mla_latent_parameters(const ModelConfig& m) {
  if (m.attention != AttentionType::mla) return 0;
  return m.d_model * (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim);
}

std::int64_t block_norm_parameters(const ModelConfig& m) {
  const std::int64_t latent = m.attention == AttentionType::mla ? m.q_lora_rank + m.kv_lora_rank : 0;
  return 2 * m.d_model + latent;
}

std::int64_t dense_ffn_parameters(const ModelConfig& m) { return 3 * m.d_model * m.ffn_hidden; }
std::int64_t shared_expert_parameters(const ModelConfig& m) {
  return 3 * m.d_model * m.expert_hidden * m.shared_experts;
}
std::int64_t router_parameters(const ModelConfig& m) { return m.d_model * m.routed_experts; }
std::int64_t routed_expert_parameters(const ModelConfig& m) { return 3 * m.d_model * m.expert_hidden; }

std::int64_t gemm_parameters_per_token(const ModelConfig& m) {
  // The LM head once per head (the main one and each MTP depth's pass), eh_proj per depth.
  std::int64_t total = (1 + m.mtp_depth) * m.vocab_size * m.d_model + m.mtp_depth * mtp_projection_parameters(m);
  for (std::int64_t l = 0; l < blocks(m); ++l) {
    total += attention_matrix_parameters(m);
    total += is_moe_layer(m, l)
                 ? router_parameters(m) + shared_expert_parameters(m) + m.top_k * routed_expert_parameters(m)
                 : dense_ffn_parameters(m);
  }
  return total;
}

std::int64_t active_parameters(const ModelConfig& m) {
  // + the final norm, and each MTP depth's enorm, hnorm and shared_head.norm
  return gemm_parameters_per_token(m) + blocks(m) * block_norm_parameters(m) + m.d_model + 3 * m.mtp_depth * m.d_model;
}

std::int64_t expert_parameters(const ModelConfig& m) {
  return moe_layers(m) * m.routed_experts * routed_expert_parameters(m);
}

std::int64_t total_parameters(const ModelConfig& m) {
  // The active count holds top_k experts per MoE layer, no embedding, and the LM head once
  // per pass (MTP's are the same tensor).
  return active_parameters(m) - moe_layers(m) * m.top_k * routed_expert_parameters(m) + expert_parameters(m) +
         m.vocab_size * m.d_model - m.mtp_depth * m.vocab_size * m.d_model;
}

double attention_core_flops_per_token(const ModelConfig& m) {
  return 6.0 * double(m.n_heads * m.seq_len * (qk_head_dim(m) + v_head_dim(m)));
}

int base_gemm_passes(const ModelConfig& m) { return m.lora.rank > 0 ? 4 : 6; }

namespace {
// Tokens through one adapted projection per token: top_k of a layer's routed experts.
double passes_through(const ModelConfig& m, const LoraSite& s) { return s.experts > 0 ? double(m.top_k) : 1.0; }
}  // namespace

std::int64_t lora_parameters(const ModelConfig& m) {
  std::int64_t n = 0;
  for (const LoraSite& s : lora_sites(m)) n += m.lora.rank * (s.N + s.K) * std::max<std::int64_t>(1, s.experts);
  return n;
}

double lora_flops_per_token(const ModelConfig& m) {
  double f = 0;
  for (const LoraSite& s : lora_sites(m))
    f += (8.0 * double(s.K) + 6.0 * double(s.N)) * double(m.lora.rank) * passes_through(m, s);
  return f;
}

double training_flops_per_token(const ModelConfig& m) {
  return base_gemm_passes(m) * double(gemm_parameters_per_token(m)) +
         double(blocks(m)) * attention_core_flops_per_token(m) + lora_flops_per_token(m);
}

double recompute_flops_per_token(const ModelConfig& m) {
  const double heads =
      double((1 + m.mtp_depth) * m.vocab_size * m.d_model + m.mtp_depth * mtp_projection_parameters(m));
  double adapters = 0;  // the blocks' adapters' forward
  for (const LoraSite& s : lora_sites(m))
    if (s.in_block) adapters += 2.0 * double(s.K + s.N) * double(m.lora.rank) * passes_through(m, s);
  return 2.0 * (double(gemm_parameters_per_token(m)) - heads) +
         double(blocks(m)) * attention_core_flops_per_token(m) / 3 + adapters;
}

}  // namespace moe
