#include "model/hf_names.h"

namespace moe {

std::vector<NamedTensor> hf_tensors(Transformer& model) {
  std::vector<NamedTensor> out;
  const std::string experts = ".experts.";
  for (Param* p : model.params()) {
    const auto at = p->name.find(experts);
    if (at == std::string::npos || !p->is_expert()) {
      out.push_back({p->name, p->w, p->g});
      continue;
    }
    // "…mlp.experts.gate_proj.weight" (El,H,C) -> "…mlp.experts.{expert_begin + j}.gate_proj.weight" (H,C)
    const Shape slice = {p->w.size(1), p->w.size(2)};
    for (std::int64_t j = 0; j < p->w.size(0); ++j)
      out.push_back({p->name.substr(0, at + experts.size()) + std::to_string(p->expert_begin + j) + "." + p->name.substr(at + experts.size()),
                     p->w.rows(j, 1).view(slice), p->g.rows(j, 1).view(slice)});
  }
  for (MoE* m : model.moe_layers()) out.push_back({m->bias_name(), m->bias(), Tensor()});
  return out;
}

}  // namespace moe
