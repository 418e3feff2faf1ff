// The model's tensors under their Hugging Face names at full logical shape (DESIGN.md's
// checkpoint names): routed experts, held as one (E,...) tensor per projection, are listed
// per expert as mlp.experts.{j}.*_proj.weight views. Used by checkpoints and test oracles.
#pragma once
#include <string>
#include <vector>

#include "model/transformer.h"

namespace moe {

struct NamedTensor {
  std::string name;
  Tensor value;
  Tensor grad;  // undefined for buffers (router biases) and frozen weights
};

std::vector<NamedTensor> hf_tensors(Transformer& model);

// The same list's names and shapes alone (a model made under Param::ShapesOnly has no values):
// what a checkpoint of the model holds. weight: trained (else a buffer, a router bias).
struct TensorSpec {
  std::string name;
  Shape shape;
  bool weight;
};
std::vector<TensorSpec> hf_tensor_specs(Transformer& model);

// "…mlp.experts.gate_proj.weight", 5 -> "…mlp.experts.5.gate_proj.weight": the HF name of one
// expert's slice of a routed-expert tensor.
std::string hf_expert_name(const std::string& name, std::int64_t expert);

}  // namespace moe
