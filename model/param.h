// A trainable parameter: its value, its gradient and its checkpoint name.
#pragma once
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe {

struct Param {
  std::string name;  // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Tensor w, g;       // value and gradient (backward accumulates into g), FP32
  bool decay;        // AdamW weight decay applies (not to norms and biases)
  // Routed-expert tensors are sharded over expert-parallel ranks along dim 0: this rank holds
  // experts [expert_begin, expert_begin + w.size(0)) of experts_total. Both 0 for the rest.
  std::int64_t expert_begin = 0, experts_total = 0;
  bool is_expert() const { return experts_total > 0; }
  Param(std::string n, Shape shape, bool weight_decay = true)
      : name(std::move(n)), w(Tensor::zeros(shape, DType::f32)), g(Tensor::zeros(shape, DType::f32)),
        decay(weight_decay) {}
};

using ParamList = std::vector<Param*>;

}  // namespace moe
