#include "trainer/checkpoint_plan.h"

#include <algorithm>

#include "model/hf_names.h"

namespace moe {
namespace {

const char* const kWeights = "weights/";
const char* const kExpAvg = "optimizer/exp_avg/";
const char* const kExpAvgSq = "optimizer/exp_avg_sq/";
const char* const kBuffers = "buffers/";

// The host memory a slice of t reads or writes: t's own, or a copy of a device buffer (one
// per buffer, kept by the plan).
float* host_data(CheckpointPlan& plan, Tensor& t) {
  if (host_readable(t.device())) return t.data<float>();
  for (auto& [dev, host] : plan.staged)
    if (dev.same_start(t)) return host.data<float>();
  plan.staged.emplace_back(t, t.to(Device::cpu));
  return plan.staged.back().second.data<float>();
}

// Every dataset of one kind (prefix) for the group's parameters, all experts included.
void add_datasets(std::vector<ckpt::Dataset>& out, const ParamGroup& g, const std::string& prefix) {
  for (const auto& s : g.spans()) {
    const Param& p = *s.param;
    if (!p.is_expert()) {
      out.push_back({prefix + p.name, p.full_shape()});
      continue;
    }
    const Shape one(p.w.shape().begin() + 1, p.w.shape().end());
    for (std::int64_t e = 0; e < p.experts_total; ++e) out.push_back({prefix + hf_expert_name(p.name, e), one});
  }
}

// Slices of the group's flat range [a, b), held in `buf` whose first element is flat index
// buf_begin: one per parameter it crosses, one per expert for expert tensors.
// writing: leave out the copies of tensors another stage writes (Param::tied_copy) and, with
// skip_replicated, the tensors every tp rank holds whole (one of them writes them).
void add_slices(CheckpointPlan& plan, const ParamGroup& g, const std::string& prefix, Tensor& buf,
                std::int64_t buf_begin, std::int64_t a, std::int64_t b, bool writing, bool skip_replicated = false) {
  std::vector<ckpt::Slice>& out = plan.slices;
  float* data = host_data(plan, buf);
  for (const auto& s : g.spans()) {
    const std::int64_t lo = std::max(a, s.begin), hi = std::min(b, s.begin + s.size);
    const Param& p = *s.param;
    if (lo >= hi || (writing && (p.tied_copy || (skip_replicated && p.tp_replicated)))) continue;
    if (p.is_split()) {  // a tensor-parallel shard: a window of the dataset
      Shape offset(p.w.shape().size(), 0);
      offset[static_cast<std::size_t>(p.split_dim)] = p.split_begin;
      out.push_back({prefix + p.name, lo - s.begin, hi - s.begin, data + (lo - buf_begin), p.w.shape(), offset});
      continue;
    }
    if (!p.is_expert()) {
      out.push_back({prefix + p.name, lo - s.begin, hi - s.begin, data + (lo - buf_begin), {}, {}});
      continue;
    }
    const std::int64_t per = p.w.numel() / p.w.size(0);  // elements of one expert
    for (std::int64_t j = (lo - s.begin) / per; j * per < hi - s.begin; ++j) {
      const std::int64_t e_lo = std::max(lo, s.begin + j * per), e_hi = std::min(hi, s.begin + (j + 1) * per);
      out.push_back({prefix + hf_expert_name(p.name, p.expert_begin + j),
                     e_lo - s.begin - j * per,
                     e_hi - s.begin - j * per,
                     data + (e_lo - buf_begin),
                     {},
                     {}});
    }
  }
}

void add_buffers(CheckpointPlan& plan, Transformer& model, bool mine) {
  for (MoE* m : model.moe_layers()) {
    plan.datasets.push_back({kBuffers + m->bias_name(), m->bias().shape()});
    if (mine)
      plan.slices.push_back({kBuffers + m->bias_name(), 0, m->bias().numel(), host_data(plan, m->bias()), {}, {}});
  }
}

}  // namespace

void CheckpointPlan::copy_back() {
  for (auto& [dev, host] : staged) dev.copy_from(host);
}

CheckpointPlan plan_write(const std::vector<ParamGroup*>& groups, Transformer& model, bool tp_lead,
                          bool write_buffers) {
  CheckpointPlan plan;
  for (const char* prefix : {kWeights, kExpAvg, kExpAvgSq})
    for (ParamGroup* g : groups)
      if (prefix == kWeights || g->trained()) add_datasets(plan.datasets, *g, prefix);
  for (ParamGroup* g : groups) {
    const std::int64_t a = g->write_begin(), b = g->write_end();
    add_slices(plan, *g, kWeights, g->weights(), 0, a, b, true, !tp_lead);
    if (!g->trained()) continue;  // frozen: no moments
    add_slices(plan, *g, kExpAvg, g->exp_avg(), g->moments_begin(), a, b, true, !tp_lead);
    add_slices(plan, *g, kExpAvgSq, g->exp_avg_sq(), g->moments_begin(), a, b, true, !tp_lead);
  }
  add_buffers(plan, model, write_buffers);
  return plan;
}

CheckpointPlan plan_read(const std::vector<ParamGroup*>& groups, Transformer& model, CheckpointPart part) {
  CheckpointPlan plan;
  for (ParamGroup* g : groups) {
    add_datasets(plan.datasets, *g, kWeights);
    add_slices(plan, *g, kWeights, g->weights(), 0, 0, g->numel(), false);
  }
  if (part == CheckpointPart::all)
    for (ParamGroup* g : groups) {
      if (!g->trained()) continue;
      const std::int64_t a = g->moments_begin(), b = std::min(g->numel(), a + g->exp_avg().numel());
      for (const char* prefix : {kExpAvg, kExpAvgSq}) add_datasets(plan.datasets, *g, prefix);
      add_slices(plan, *g, kExpAvg, g->exp_avg(), a, a, b, false);
      add_slices(plan, *g, kExpAvgSq, g->exp_avg_sq(), a, a, b, false);
    }
  add_buffers(plan, model, true);
  return plan;
}

}  // namespace moe
