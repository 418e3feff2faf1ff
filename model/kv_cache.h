// What decoding keeps of the tokens before (inference, model/transformer.h's decode): per
// block, GQA's rotated keys and values, or MLA's compressed cache as DeepSeek-V2 keeps it,
// the normed key/value latent and the rotated shared key part (kv_b re-expands them each step).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/tensor.h"

namespace moe {

struct KvCache {
  std::int64_t length = 0, capacity = 0;  // tokens held, and room for
  struct Layer {
    Tensor a, b;  // GQA: k, v (capacity, Hkv*D); MLA: latent (capacity, kv_rank), k_rope (capacity, rope)
  };
  std::vector<Layer> layers;  // one per block
};

}  // namespace moe
