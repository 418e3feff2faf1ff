// Run under mpirun: `moe train` on the sim device (kernels/device.h: a GPU stand-in whose
// memory host code may not touch) under one layout (MOE_TEST_LAYOUT, e.g. "parallel.ep=2" or
// "precision=fp8 parallel.pp=2 train.grad_accum=2"), against the same run on the CPU:
//  - no host code reads or writes device memory (a ResidencyError would end the run);
//  - losses, gradient norms, the validation loss and every weight equal the CPU's bit for bit
//    (the sim device runs the CPU kernels: any difference is a path that differs by device);
//  - a checkpoint saved mid-run on the sim device resumes to the same weights, and
//    fine-tuning from it equals the CPU's;
//  - each training step stays within its budget of device -> host copies (below).
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "plan/counts.h"
#include "tests/support/corpus.h"
#include "tests/support/mpi_corpus.h"
#include "tests/support/testing.h"
#include "config/config.h"
#include "trainer/train.h"

using namespace moe;

namespace {
// Copies to the host one training step of this rank may make: per micro-batch and MoE layer
// of its stage, the dispatch plan's counts (one copy; under ep they are exchanged on the
// device first), again in backward when the layer is recomputed; per micro-batch each
// pipeline hand-over (activations and gradients go through the host); per step the losses
// (cross-entropy, balance and MTP loss, summed on the device, one copy) and the two parameter
// groups' squared gradient norms, and a last stage's copy of the embedding (MTP), taken off.
std::int64_t to_host_budget(const Config& c, const Layout& l) {
  const std::int64_t moe_layers = moe::moe_layers(c.model);  // MTP's blocks too
  // One copy of the plan's counts per hop (model/dispatch.h: two across nodes).
  const std::int64_t hops = l.hierarchical && l.ep_nodes() > 1 ? 2 : 1;
  const std::int64_t per_layer = (c.train.recompute ? 2 : 1) * hops;
  const std::int64_t chunks = l.pp * c.parallel.chunks();
  const std::int64_t per_micro_batch = moe_layers * per_layer + (l.pp > 1 ? 2 * chunks : 0);
  const bool tied_embedding = c.model.mtp_depth > 0 && l.pp > 1 && c.parallel.schedule != PipeSchedule::dualpipev;
  return c.train.grad_accum * per_micro_batch + 1 + 2 + (tied_embedding ? 1 : 0);
}
}  // namespace

TEST_CASE("sim device: training equals the CPU bit for bit, with no host access to device memory", "[mpi][trainer]") {
  MpiCommunicator world;
  const char* env = std::getenv("MOE_TEST_LAYOUT");
  REQUIRE(env != nullptr);
  const std::string dir = testing::prepared_corpus(world, "sim_data_np" + std::to_string(world.size())),
                    run = "sim_run_np" + std::to_string(world.size());
  if (world.rank() == 0) std::filesystem::remove_all(run);
  world.barrier();
  std::vector<std::string> kv =
      testing::micro_moe({"data.dir=" + dir, "train.steps=3", "train.log_every=100", "train.eval_batches=1",
                          "train.eval_every=2", "train.warmup_steps=1", "train.micro_batch=2", "checkpoint.dir="});
  std::istringstream in(env);
  for (std::string x; in >> x;) kv.push_back(x);
  auto config = [&](std::vector<std::string> extra) {
    auto all = kv;
    all.insert(all.end(), extra.begin(), extra.end());
    return parse_config("", "test", all);
  };

  Trainer cpu(config({}), world);
  const TrainResult ref = cpu.run();
  const auto ref_weights = cpu.gather_weights(/*optimizer=*/true);
  const Config sc = config({"device=sim"});
  Trainer sim(sc, world);
  const TrainResult res = sim.run();
  const auto weights = sim.gather_weights(true);

  REQUIRE(res.losses.size() == 3);
  CHECK(res.losses == ref.losses);
  CHECK(res.grad_norms == ref.grad_norms);
  CHECK(res.val_loss == ref.val_loss);
  REQUIRE(weights.size() == ref_weights.size());
  for (const auto& [name, w] : ref_weights) {
    INFO(name);
    REQUIRE(weights.count(name) == 1);
    CHECK(testing::max_rel_err(weights.at(name), w) == 0);
  }
  // Nothing is counted on the CPU; the sim run stays within its budget.
  CHECK(ref.traffic.step_traffic.to_host == 0);
  const Layout l = resolve_layout(sc, world.size());
  const std::int64_t budget = to_host_budget(sc, l);
  INFO(res.traffic.step_traffic_sites);
  CHECK(res.traffic.step_traffic.to_host > 0);
  CHECK(res.traffic.step_traffic.to_host <= budget);
  if (world.rank() == 0)
    std::printf("sim '%s': busiest step of rank 0 %lld copies to the host (budget %lld)\n%s\n", env,
                static_cast<long long>(res.traffic.step_traffic.to_host), static_cast<long long>(budget),
                res.traffic.step_traffic_sites.c_str());

  // Interrupted after step 2 and resumed from its checkpoint, on the sim device: the same run.
  Trainer first(config({"device=sim", "checkpoint.dir=" + run, "train.stop_at=2"}), world);
  first.run();
  Trainer second(config({"device=sim", "checkpoint.dir=" + run}), world);
  const TrainResult resumed = second.run();
  CHECK(resumed.resume.start_step == 2);
  REQUIRE(!resumed.losses.empty());
  CHECK(resumed.losses.back() == ref.losses.back());
  const auto resumed_weights = second.gather_weights(true);
  for (const auto& [name, w] : ref_weights) {
    INFO("resumed " << name);
    CHECK(testing::max_rel_err(resumed_weights.at(name), w) == 0);
  }

  // Fine-tuning from that checkpoint (its weights, a fresh optimizer) on the sim device: the
  // CPU's validation loss before training and losses after.
  REQUIRE(!resumed.resume.last_checkpoint.empty());
  auto tune = [&](const std::string& device) {
    Trainer t(config({"device=" + device, "checkpoint.init_from=" + resumed.resume.last_checkpoint, "train.steps=2"}),
              world);
    return t.run();
  };
  const TrainResult tuned_cpu = tune("cpu"), tuned_sim = tune("sim");
  CHECK(tuned_sim.resume.init_val_loss == tuned_cpu.resume.init_val_loss);
  CHECK(tuned_sim.resume.init_val_loss > 0);
  CHECK(tuned_sim.losses == tuned_cpu.losses);
}
