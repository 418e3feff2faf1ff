// Checkpoint attributes: ckpt::Meta's typed map through a real file, and the trainer's
// RunMeta table through the map.
#include <catch2/catch.hpp>

#include "checkpoint/checkpoint.h"
#include "comm/communicator.h"
#include "kernels/error.h"
#include "trainer/run_meta.h"

using namespace moe;

TEST_CASE("checkpoint meta: every attribute type written and read back as it was", "[checkpoint]") {
  SelfCommunicator self;
  ckpt::Meta meta;
  meta.attrs = {{"negative", std::int64_t{-5}},
                {"big", std::uint64_t{18446744073709551557ull}},  // past int64
                {"x", 0.1},
                {"text", std::string("a: 1\nb: [2, 3]\n")},
                {"empty", std::string()}};
  std::vector<float> w(6, 1.5f);
  ckpt::write("meta.h5", self, meta, {{"weights/w", {2, 3}}}, {{"weights/w", 0, 6, w.data(), {}, {}}});
  const ckpt::Meta back = ckpt::read_meta("meta.h5");
  CHECK(back.attrs == meta.attrs);  // format_version is the checkpoint's own, not the writer's
  CHECK(back.file == "meta.h5");
  CHECK_THROWS_WITH(back.get<double>("negative"), Catch::Contains("meta.h5: attribute negative"));
  meta.attrs["format_version"] = std::int64_t{1};
  CHECK_THROWS_AS(ckpt::write("meta2.h5", self, meta, {}, {}), CheckpointError);
}

TEST_CASE("checkpoint meta: the run's fields go through the map and back, newer ones optional", "[checkpoint]") {
  RunMeta m{.step = 12,
            .seed = 1ull << 63,
            .config_yaml = "model: {}\n",
            .layout = "world 2",
            .global_batch = 3,
            .wall_seconds = 4.5,
            .device_hours = 6,
            .last_loss = 7,
            .val_loss = 8,
            .cost = {.compute = 9,
                     .communication = 10,
                     .evaluation = 11,
                     .checkpoint = 12,
                     .pipeline_idle = 13,
                     .tokens = 14,
                     .flops = 15,
                     .train_seconds = 16},
            .tokenizer = "00ff00ff00ff00ff",
            .replicas = R"({"slots": 1})"};
  ckpt::Meta meta = m.to_meta();
  CHECK(meta.attrs.size() == 19);
  const RunMeta back = RunMeta::from(meta);
  CHECK(back.to_meta().attrs == meta.attrs);
  CHECK((back.step == 12 && back.seed == 1ull << 63 && back.cost.tokens == 14 && back.cost.train_seconds == 16));
  CHECK(back.replicas == m.replicas);
  // A checkpoint from before the cost counters: they read 0.
  meta.attrs.erase("cost_flops"), meta.attrs.erase("global_batch");
  CHECK(RunMeta::from(meta).cost.flops == 0);
  CHECK(RunMeta::from(meta).global_batch == 0);
  // An optional text: left out when empty, read back empty when absent.
  RunMeta none = back;
  none.tokenizer.clear();
  CHECK(none.to_meta().attrs.count("tokenizer_xxh64") == 0);
  CHECK(RunMeta::from(none.to_meta()).tokenizer.empty());
  // One every checkpoint has: a one-line error naming it.
  meta.attrs.erase("step");
  meta.file = "x.h5";
  CHECK_THROWS_WITH(RunMeta::from(meta), Catch::Contains("x.h5: attribute step is missing"));
}
