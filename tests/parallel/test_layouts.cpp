// Run under mpirun: `moe train` under one parallel layout (MOE_TEST_LAYOUT, e.g.
// "parallel.ep=2 parallel.zero=1" or "parallel.pp=2 parallel.tp=2 train.grad_accum=4", plus
// model options) against world size 1 (MPI_COMM_SELF)
// on the same micro-batches: after 3 steps the loss and gradient norm of each step agree within
// 1e-5 relative, every weight (experts gathered over ep, router biases too) within 5e-5. Also: ZeRO-1's optimizer
// memory per rank against total / dp, traffic that exists only where the layout needs it, and
// the planner's memory and GEMM FLOPs against what the run allocated and multiplied.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "parallel/mesh.h"
#include "plan/plan.h"
#include "tests/support/corpus.h"
#include "tests/support/mpi_corpus.h"
#include "tests/support/testing.h"
#include "config/config.h"
#include "trainer/train.h"

using namespace moe;

namespace {
constexpr double kWeightTolerance = 5e-5;  // relative, after 3 AdamW steps at lr 5e-4 (below)
}  // namespace

TEST_CASE("layout: 3 training steps equal world size 1", "[mpi][trainer]") {
  MpiCommunicator world, self(MPI_COMM_SELF);
  const char* env = std::getenv("MOE_TEST_LAYOUT");
  REQUIRE(env != nullptr);
  // parallel.* keys apply to the layout run only; train.grad_accum=K gives it K micro-batches
  // per rank (the reference runs dp x K).
  std::vector<std::string> layout, model;
  std::int64_t accum = 1;
  std::istringstream in(env);
  for (std::string kv; in >> kv;) {
    if (kv.rfind("train.grad_accum=", 0) == 0) accum = std::stoll(kv.substr(17));
    else (kv.rfind("parallel.", 0) == 0 ? layout : model).push_back(kv);
  }

  const std::string dir = testing::prepared_corpus(world, "layout_data_np" + std::to_string(world.size()));
  // lr: AdamW moves every element by about lr whatever the size of its gradient, so the
  // summation-order noise of near-zero gradients (sums over ranks, one grouped GEMM over the
  // rows of all sources instead of one per micro-batch) reaches the weights in proportion to
  // lr: up to 1.2e-5 relative at lr 3e-3, 2e-6 at 5e-4 on an AMD EPYC; on an Intel Xeon, whose
  // OpenBLAS kernels sum in another order, 1.9e-5 at 5e-4 (tp4, a shared expert's gate_proj,
  // the same before and after the change that measured it). Weights are held to
  // kWeightTolerance; a wrong gradient moves them by about lr over weights of init_std 0.02,
  // 2.5e-2 relative: orders of magnitude above it. Losses and gradient norms stay at 1e-5.
  std::vector<std::string> common =
      testing::micro_moe({"data.dir=" + dir, "train.steps=3", "train.log_every=100", "train.eval_batches=1",
                          "train.warmup_steps=1", "train.lr=5e-4"});
  common.insert(common.end(), model.begin(), model.end());
  auto config = [&](std::int64_t grad_accum, const std::vector<std::string>& extra) {
    auto kv = common;
    kv.push_back("train.micro_batch=2");
    kv.push_back("train.grad_accum=" + std::to_string(grad_accum));
    kv.insert(kv.end(), extra.begin(), extra.end());
    return parse_config("", "test", kv);
  };
  Trainer parallel(config(accum, layout), world);
  const TrainResult res = parallel.run();
  const auto weights = parallel.gather_weights();
  const Layout l = resolve_layout(config(accum, layout), world.size());
  // The same micro-batches, one after the other: rank r's micro-batch k is micro-step
  // k * dp + r here (so capacity, computed per micro-batch, drops the same assignments).
  Trainer one(config(l.dp * accum, {}), self);
  const TrainResult ref = one.run();
  const auto ref_weights = one.gather_weights();

  REQUIRE(res.losses.size() == 3);
  for (std::size_t s = 0; s < 3; ++s) {
    INFO("step " << s + 1);
    CHECK(std::abs(res.losses[s] - ref.losses[s]) <= 1e-5 * std::abs(ref.losses[s]));
    // AdamW hardly sees clipping (it is scale-free), so the norm is checked on its own.
    CHECK(std::abs(res.grad_norms[s] - ref.grad_norms[s]) <= 1e-5 * ref.grad_norms[s]);
  }
  // Evaluation runs through the same stages and tp ranks: the final validation loss too.
  CHECK(std::abs(res.val_loss - ref.val_loss) <= 1e-5 * ref.val_loss);
  REQUIRE(weights.size() == ref_weights.size());
  double worst = 0;
  for (const auto& [name, w] : ref_weights) {
    INFO(name);
    REQUIRE(weights.count(name) == 1);
    // A LoRA B factor starts at zero, so its own scale after 3 steps is about 3 lr: it is
    // measured against the scale of the weights around it (init_std) instead, where a wrong
    // gradient still moves it by lr, 2.5e-2 of that.
    const bool from_zero = name.find(".lora_B") != std::string::npos;
    const double err = testing::max_rel_err(weights.at(name), w, from_zero ? 0.02 : 1e-12);
    CHECK(err <= kWeightTolerance);
    worst = std::max(worst, err);
  }
  if (world.rank() == 0) std::printf("layout '%s': worst weight difference %.2e relative\n", env, worst);
  // LoRA: the base is frozen bitwise (against a model built and not trained), the adapters'
  // B factors (zero at the start) have moved.
  if (config(accum, layout).model.lora.rank > 0) {
    Trainer fresh(config(l.dp * accum, {}), self);
    std::size_t frozen = 0, moved = 0;
    for (const auto& [name, w] : fresh.gather_weights()) {
      INFO(name);
      const bool adapter = name.find(".lora_") != std::string::npos;
      const bool same = std::memcmp(w.raw(), ref_weights.at(name).raw(), w.nbytes()) == 0;
      if (!adapter) CHECK(same);
      frozen += !adapter && same, moved += name.find(".lora_B") != std::string::npos && !same;
    }
    CHECK(moved > 0);
    if (world.rank() == 0)
      std::printf("lora: %zu base tensors bitwise unchanged, %zu B factors trained\n", frozen, moved);
  }
  // ZeRO-1 shards the AdamW moments of every group over its data-parallel ranks.
  const Config pc = config(accum, layout);
  const bool zero1 = pc.parallel.zero == 1;
  CHECK(res.size.optimizer_bytes_total == ref.size.optimizer_bytes_total);
  CHECK(ref.size.optimizer_bytes == ref.size.optimizer_bytes_total);
  if (zero1 && l.pp == 1 && l.tp == 1) {
    const double share = double(res.size.optimizer_bytes) / double(res.size.optimizer_bytes_total);
    CHECK(std::abs(share - 1.0 / l.dp) <= 0.05 / l.dp);
  }
  // Over all ranks, ZeRO-1 holds the moments about once (tensors every tp rank holds whole,
  // norms and routers, once per tp rank; and each group's padding). A last stage holding a
  // copy of the embedding for MTP keeps its moments too, over its dp ranks.
  if (zero1) {
    const double held = world.all_reduce_sum(double(res.size.optimizer_bytes)),
                 total = double(res.size.optimizer_bytes_total);
    const double copy =
        pc.model.mtp_depth > 0 && l.pp > 1 && pc.parallel.schedule != PipeSchedule::dualpipev  // (V: one copy)
            ? 2.0 * sizeof(float) * double(pc.model.vocab_size * pc.model.d_model)
            : 0;
    CHECK(held >= total + copy);
    CHECK(held <= 1.05 * total + copy);
  }
  // The planner speaks of the most loaded pipeline stage: its ranks are compared.
  const Plan plan = make_plan(pc, Cluster{}, l);
  const bool on_stage = coords_of(l, world.rank()).pp == plan.memory_stage;
  const double stage_ranks = world.all_reduce_sum(on_stage ? 1.0 : 0.0);
  // The dry run's arithmetic equals what the trainer allocated, up to ZeRO-1's padding
  // (at most one element per rank of each of the two groups, 8 bytes each).
  if (on_stage) CHECK(std::abs(plan.memory.optimizer - double(res.size.optimizer_bytes)) <= 2.0 * 8 * l.dp);
  // The planner against the layout's run (the first in this process, so the tensors alive
  // are its own): the GEMM FLOPs the ops counted equal its count exactly (dropless: every
  // token through top_k experts; capacity drops run fewer), and the most bytes a rank's
  // tensors held at once is within 10% of its memory per device.
  INFO("planned " << res.profile.planned_memory_bytes << " bytes, measured " << res.profile.peak_tensor_bytes);
  if (pc.model.capacity_factor == 0) CHECK(res.profile.gemm_flops_per_step == res.profile.planned_flops_per_step);
  else CHECK(res.profile.gemm_flops_per_step <= res.profile.planned_flops_per_step);
  // Memory under bf16 / fp8 is the planner's picture of a GPU run (activations in BF16, GEMM
  // inputs in FP8); the CPU reference keeps the other activations in FP32 and emulates FP8
  // with FP32 temporaries, so only fp32 runs are held to the plan's bytes.
  const bool same_memory_model = pc.precision == Precision::fp32;
  if (on_stage && same_memory_model)
    CHECK(std::abs(res.profile.planned_memory_bytes - res.profile.peak_tensor_bytes) <=
          0.10 * res.profile.peak_tensor_bytes);
  // The activation model on its own: what a step adds on top of the state held before it, the
  // mean over the stage's ranks (the plan assumes balanced experts; 16 tokens are not).
  const double step_bytes =
      world.all_reduce_sum(on_stage ? res.profile.peak_tensor_bytes - res.profile.start_tensor_bytes : 0) / stage_ranks;
  INFO("step memory: planned " << res.profile.planned_step_memory_bytes << ", measured " << step_bytes);
  // With tp and ep together a rank dispatches 1/tp of a 16-token micro-batch: its rows per
  // expert rank are uneven enough to exceed the balanced plan by up to ~12%.
  if (same_memory_model)
    CHECK(std::abs(res.profile.planned_step_memory_bytes - step_bytes) <=
          (l.tp > 1 && l.ep > 1 ? 0.15 : 0.10) * step_bytes);
  if (world.rank() == 0)
    std::printf(
        "plan vs measured: memory %.0f / %.0f bytes (a step's own %.0f / %.0f), GEMM FLOP per step %.6g / %.6g\n",
        res.profile.planned_memory_bytes, res.profile.peak_tensor_bytes, res.profile.planned_step_memory_bytes,
        res.profile.peak_tensor_bytes - res.profile.start_tensor_bytes, res.profile.planned_flops_per_step,
        res.profile.gemm_flops_per_step);
  // DualPipeV computes weight gradients in its weights units (every stage has some), unless
  // its backwards stay whole.
  if (pc.parallel.schedule == PipeSchedule::dualpipev)
    CHECK((res.profile.deferred_weight_grads > 0) == pc.parallel.split_weight_grads);
  // Traffic only where the layout needs it.
  CHECK(res.traffic.bytes_per_step.count("all_to_all") == (l.ep > 1 ? 1u : 0u));
  CHECK(res.traffic.bytes_per_step.count("send") == (l.pp > 1 ? 1u : 0u));
  CHECK(res.traffic.bytes_per_step.count("reduce_scatter") == (zero1 ? 1u : 0u));
  // One expert group per rank: group-limited routing bounds the ranks a token reaches.
  if (l.ep > 1 && pc.model.n_groups == l.ep) CHECK(res.traffic.max_ranks_per_token <= pc.model.topk_groups);
}
