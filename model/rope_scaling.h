// A model's RoPE scaling (YaRN, ModelConfig::rope_factor > 1) as the attention layers apply it:
// transformers' _compute_yarn_parameters for the frequencies and the cos/sin factor, and
// DeepseekV3Attention's softmax scale.
#pragma once
#include <cmath>

#include "config/model_config.h"
#include "kernels/ops.h"

namespace moe {

// 0.1 * mscale * ln(factor) + 1 (1 for factor <= 1): YaRN's attention temperature.
inline double yarn_mscale(double factor, double mscale) {
  return factor <= 1 ? 1.0 : 0.1 * mscale * std::log(factor) + 1.0;
}

inline ops::RopeScaling rope_scaling(const ModelConfig& m) {
  ops::RopeScaling s;
  if (m.rope_factor <= 1) return s;
  s.factor = m.rope_factor, s.beta_fast = m.rope_beta_fast, s.beta_slow = m.rope_beta_slow;
  s.original_positions = m.rope_original_positions;
  if (m.rope_attention_factor > 0) s.attention_factor = m.rope_attention_factor;
  else if (m.rope_mscale > 0 && m.rope_mscale_all_dim > 0)
    s.attention_factor = yarn_mscale(m.rope_factor, m.rope_mscale) / yarn_mscale(m.rope_factor, m.rope_mscale_all_dim);
  else s.attention_factor = yarn_mscale(m.rope_factor, 1);
  return s;
}

// mla: the factor on the softmax scale 1/sqrt(qk_head_dim), yarn_mscale(factor,
// mscale_all_dim)^2 where mscale_all_dim is set.
inline double mla_softmax_mscale(const ModelConfig& m) {
  if (m.rope_factor <= 1 || m.rope_mscale_all_dim <= 0) return 1.0;
  const double s = yarn_mscale(m.rope_factor, m.rope_mscale_all_dim);
  return s * s;
}

}  // namespace moe
