#include "model/hf_names.h"

namespace moe {

namespace {
const std::string kExperts = ".experts.";
}

std::string hf_expert_name(const std::string& name, std::int64_t expert) {
  const auto at = name.find(kExperts);
  MOE_CHECK(at != std::string::npos, ShapeError, "{}: not a routed-expert tensor", name);
  const auto cut = at + kExperts.size();
  return name.substr(0, cut) + std::to_string(expert) + "." + name.substr(cut);
}

std::vector<NamedTensor> hf_tensors(Transformer& model) {
  std::vector<NamedTensor> out;
  for (Param* p : model.params()) {
    if (!p->is_expert()) {
      out.push_back({p->name, p->w, p->g});
      continue;
    }
    // "…mlp.experts.gate_proj.weight" (El,H,C) -> "…mlp.experts.{expert_begin + j}.gate_proj.weight" (H,C)
    const Shape slice = {p->w.size(1), p->w.size(2)};
    for (std::int64_t j = 0; j < p->w.size(0); ++j)
      out.push_back({hf_expert_name(p->name, p->expert_begin + j), p->w.rows(j, 1).view(slice),
                     p->g.defined() ? p->g.rows(j, 1).view(slice) : Tensor()});
  }
  for (MoE* m : model.moe_layers()) out.push_back({m->bias_name(), m->bias(), Tensor()});
  return out;
}

std::vector<TensorSpec> hf_tensor_specs(Transformer& model) {
  std::vector<TensorSpec> out;
  for (Param* p : model.params()) {
    const Shape full = p->full_shape();
    if (!p->is_expert()) {
      out.push_back({p->name, full, true});
      continue;
    }
    const Shape slice(full.begin() + 1, full.end());
    for (std::int64_t j = 0; j < p->shape()[0]; ++j)
      out.push_back({hf_expert_name(p->name, p->expert_begin + j), slice, true});
  }
  for (MoE* m : model.moe_layers()) out.push_back({m->bias_name(), m->bias().shape(), false});
  return out;
}

}  // namespace moe
