// Run under mpirun (2 ranks, ep 2): the routing-collapse drill (debug.collapse_routing: every
// token picks expert 0) against the memory guard. With model.capacity_factor the most loaded
// rank's step memory stays within the planner's worst case at that factor (PlanOptions::load,
// what `moe plan` prints), the overflow is dropped and counted; without it the same collapse
// costs more, within the planner's bound for a collapse.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>

#include "parallel/mesh.h"
#include "plan/plan.h"
#include "tests/support/corpus.h"
#include "tests/support/mpi_corpus.h"
#include "tests/support/testing.h"
#include "trainer/train.h"

using namespace moe;

namespace {
struct Measured {
  double step_bytes = 0;  // the most a rank's step added to what it held before
  double dropped = 0;
  double planned_step_bytes = 0;  // the planner's, at the most load the config allows
};

Measured collapse(MpiCommunicator& world, const std::vector<std::string>& kv) {
  const Config cfg = parse_config("", "test", kv);
  Trainer trainer(cfg, world);
  const TrainResult res = trainer.run();
  const Layout l = resolve_layout(cfg, world.size());
  const Plan plan = make_plan(cfg, Cluster{}, l, {.load = expert_load_bound(cfg.model, l)});
  Tensor most = Tensor::empty({1}, DType::f64);
  most.data<double>()[0] = res.profile.peak_tensor_bytes - res.profile.start_tensor_bytes;
  Tensor all = Tensor::empty({world.size()}, DType::f64);
  world.all_gather(all, most);
  Measured m{.step_bytes = 0, .dropped = res.dropped, .planned_step_bytes = 0};
  for (int r = 0; r < world.size(); ++r) m.step_bytes = std::max(m.step_bytes, all.data<double>()[r]);
  m.planned_step_bytes = plan.memory.activations + plan.memory.workspace + plan.memory.buffers;
  return m;
}
}  // namespace

TEST_CASE("imbalance: a collapsed router stays within the planned worst case, its overflow counted", "[mpi][trainer]") {
  MpiCommunicator world;
  REQUIRE(world.size() == 2);
  const std::string dir = testing::prepared_corpus(world, "imbalance_data");
  // 8 experts, top-2, ep 2: micro-batches of 2 x 16 tokens per rank, 2 MoE layers, 3 steps.
  const std::vector<std::string> common = testing::micro_moe(
      {"data.dir=" + dir, "model.seq_len=16", "train.steps=3", "train.log_every=100", "train.eval_batches=1",
       "train.micro_batch=2", "parallel.ep=2", "debug.collapse_routing=true"});
  auto with = [&](std::vector<std::string> more) {
    auto kv = common;
    kv.insert(kv.end(), more.begin(), more.end());
    return kv;
  };
  const Measured guarded = collapse(world, with({"model.capacity_factor=1.5"}));
  const Measured unguarded = collapse(world, with({}));
  if (world.rank() == 0)
    std::printf(
        "collapse: step memory guarded %.0f (planned %.0f at 1.5x), unguarded %.0f (planned %.0f at 2x); "
        "dropped %.0f\n",
        guarded.step_bytes, guarded.planned_step_bytes, unguarded.step_bytes, unguarded.planned_step_bytes,
        guarded.dropped);
  // Each rank's 32 tokens all choose expert 0, which keeps ceil(1.5 x 32 x 2 / 8) = 12 of
  // them: at least 20 dropped per rank, MoE layer and step.
  CHECK(guarded.dropped >= 20.0 * 2 * 2 * 3);
  CHECK(unguarded.dropped == 0);
  CHECK(guarded.step_bytes <= 1.10 * guarded.planned_step_bytes);
  CHECK(unguarded.step_bytes <= 1.10 * unguarded.planned_step_bytes);
  CHECK(guarded.step_bytes < unguarded.step_bytes);
}
