// A trainable parameter: its value, its gradient and its checkpoint name.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe {

struct LoraAdapter;  // model/lora.h

struct Param {
  std::string name;  // Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
  Tensor w, g;       // value and gradient (backward accumulates into g), FP32
  bool decay;        // AdamW weight decay applies (not to norms and biases)
  // Routed-expert tensors are sharded over expert-parallel ranks along dim 0: this rank holds
  // experts [expert_begin, expert_begin + shape()[0]) of experts_total. Both 0 for the rest.
  std::int64_t expert_begin = 0, experts_total = 0;
  // Tensor parallelism (model/tensor_parallel.h): a shard holds indices [split_begin,
  // split_begin + shape()[split_dim]) of split_full along split_dim (-1: the whole tensor).
  int split_dim = -1;
  std::int64_t split_begin = 0, split_full = 0;
  // A whole tensor on every tp rank of a tp > 1 group. Replicated: the same gradient on each
  // (norm weights), counted once by the gradient norm. tp_partial: each rank's gradient is
  // its share of the sum (the router: each rank dispatches its own tokens).
  bool tp_replicated = false, tp_partial = false;
  // A copy of a parameter another pipeline stage holds (a last stage's embedding for MTP):
  // its gradient is summed with the other's before the update, so both stay equal; the
  // gradient norm and checkpoints count the other.
  bool tied_copy = false;
  // How Transformer::init fills it: standard (N(0, init_std); norms, which do not decay, 1),
  // zeros, or kaiming_uniform (U(-1/sqrt(fan_in), 1/sqrt(fan_in)), torch's nn.Linear and
  // PEFT's LoRA A).
  enum class Init { standard, zeros, kaiming_uniform } init = Init::standard;
  // A LoRA adapter on this projection (model/lora.h); null: none.
  std::shared_ptr<LoraAdapter> lora;
  bool is_expert() const { return experts_total > 0; }
  bool is_split() const { return split_dim >= 0; }
  // What this rank holds (w's shape; under ShapesOnly, w is undefined and this is all there is).
  const Shape& shape() const { return shape_; }
  // The logical shape the checkpoint stores (experts: all of them; tp shards: the whole).
  Shape full_shape() const {
    Shape s = shape_;
    if (is_expert()) s[0] = experts_total;
    if (is_split()) s[static_cast<std::size_t>(split_dim)] = split_full;
    return s;
  }
  Param(std::string n, Shape shape, bool weight_decay = true);

  // While one lives on this thread, Params are made without storage (w and g undefined,
  // shape() their shape): a model's tensor list at no memory cost, as PyTorch's meta device
  // (moe import plans DeepSeek-V3's 671B parameters this way). Such a model runs nothing.
  class ShapesOnly {
   public:
    ShapesOnly();
    ~ShapesOnly();
    ShapesOnly(const ShapesOnly&) = delete;
    ShapesOnly& operator=(const ShapesOnly&) = delete;

   private:
    bool before_;
  };

 private:
  Shape shape_;
};

using ParamList = std::vector<Param*>;

}  // namespace moe
