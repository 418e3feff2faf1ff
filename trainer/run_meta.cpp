#include "trainer/run_meta.h"

#include <type_traits>

namespace moe {

namespace {
// Every field with its attribute name, and whether every checkpoint has it (false: added
// later, 0 when absent). M is RunMeta or const RunMeta.
template <class M, class F>
void for_each_field(M& m, F&& f) {
  f("step", m.step, true);
  f("seed", m.seed, true);
  f("config", m.config_yaml, true);
  f("layout", m.layout, true);
  f("tokens", m.cost.tokens, true);
  f("global_batch", m.global_batch, false);
  f("wall_seconds", m.wall_seconds, true);
  f("device_hours", m.device_hours, true);
  f("last_loss", m.last_loss, true);
  f("val_loss", m.val_loss, true);
  f("cost_compute_device_hours", m.cost.compute, false);
  f("cost_communication_device_hours", m.cost.communication, false);
  f("cost_evaluation_device_hours", m.cost.evaluation, false);
  f("cost_checkpoint_device_hours", m.cost.checkpoint, false);
  f("cost_pipeline_idle_device_hours", m.cost.pipeline_idle, false);
  f("cost_flops", m.cost.flops, false);
  f("cost_train_seconds", m.cost.train_seconds, false);
  f("tokenizer_xxh64", m.tokenizer, false);
  f("redundant_experts", m.replicas, false);
}
}  // namespace

ckpt::Meta RunMeta::to_meta() const {
  ckpt::Meta meta;
  for_each_field(*this, [&](const char* name, const auto& v, bool required) {
    if constexpr (std::is_same_v<std::decay_t<decltype(v)>, std::string>)
      if (!required && v.empty()) return;  // an optional text left out reads back empty
    meta.attrs[name] = v;
  });
  return meta;
}

RunMeta RunMeta::from(const ckpt::Meta& meta) {
  RunMeta m;
  for_each_field(m, [&](const char* name, auto& v, bool required) {
    if (required || meta.has(name)) v = meta.get<std::decay_t<decltype(v)>>(name);
  });
  return m;
}

}  // namespace moe
