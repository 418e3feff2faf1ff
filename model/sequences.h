// The shape of a micro-batch as the layers see it: B sequences of T tokens and, with document
// masking (data.document_mask), each token's place in its document: attention then sees no
// earlier document and RoPE counts positions from each document's first token.
#pragma once
#include <cstdint>

#include "config/model_config.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace moe {

struct Sequences {
  std::int64_t B = 0, T = 0;
  Tensor positions;        // (B*T) i32 on the model's device (kernels/ops.h), or undefined: one document a sequence
  std::int64_t first = 0;  // the first token's position: decoding after a KV cache of so many (no positions then)
};

// Whether an attention core runs the fused form (ops::attention_lse_*, cuDNN's SDPA): on a GPU
// under bf16 / fp8 where the build has it, and without document positions, which the fused
// kernel here does not take (the GEMM-and-softmax form masks them).
inline bool fused_attention_core(Device dev, Precision precision, const Tensor& positions) {
  return runs_cuda(dev) && ops::fused_attention_on_gpu() && precision != Precision::fp32 && !positions.defined();
}

}  // namespace moe
