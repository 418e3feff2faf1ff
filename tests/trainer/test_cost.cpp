// The cost report's arithmetic: prices and the projection on a hand-computed case, and
// cluster files (the counts behind it: tests/plan).
#include <catch2/catch.hpp>

#include "trainer/cost.h"

using namespace moe;

TEST_CASE("cost: device-hours, dollars and the projection on a hand-computed case", "[cost]") {
  Config cfg = parse_config("", "test", {"train.target_tokens=1e6"});
  Cluster c{.name = "hand", .device = "computed", .file = "", .peak_bf16_tflops = 2.0, .price_per_device_hour = 3.0};
  CostCounters k;
  k.compute = 1.5, k.communication = 0.25, k.evaluation = 0.125, k.checkpoint = 0.125;  // 2 device-hours
  k.tokens = 2e5, k.flops = 3.6e15, k.train_seconds = 900;
  const auto j = cost_json(c, k, cfg, 4);
  CHECK(j["device_hours"]["total"].get<double>() == 2.0);
  CHECK(j["cost_usd"].get<double>() == 6.0);
  CHECK(j["usd_per_million_tokens"].get<double>() == Approx(30.0));
  CHECK(j["achieved_tflops_per_device"].get<double>() == Approx(1.0));  // 3.6e15 / 900 s / 4 devices
  CHECK(j["mfu"].get<double>() == Approx(0.5));
  // 1e5 tokens per device-hour: 8e5 tokens to go take 8 device-hours, 2 h on 4 devices, $24.
  CHECK(j["projection"]["device_hours"].get<double>() == Approx(8.0));
  CHECK(j["projection"]["wall_hours"].get<double>() == Approx(2.0));
  CHECK(j["projection"]["cost_usd"].get<double>() == Approx(24.0));
  CHECK(cost_text(j).find("$6.000000") != std::string::npos);
  // Pipeline idle is its own category of the device-hours: half a device-hour of 2.5.
  k.pipeline_idle = 0.5;
  const auto p = cost_json(c, k, cfg, 4);
  CHECK(p["device_hours"]["total"].get<double>() == 2.5);
  CHECK(cost_text(p).find("pipeline idle 20%") != std::string::npos);
}

TEST_CASE("cost: cluster files load, and an unknown cluster is a one-line error", "[cost]") {
  for (const char* name : {"h800", "h100", "a100", "local-cpu"}) {
    Config cfg = parse_config("", "test", {fmt::format("cost.cluster={}", name)});
    const Cluster c = load_cluster(cfg);
    CHECK(c.name == name);
    CHECK(c.price_per_device_hour > 0);
    CHECK((c.calibrate || c.peak_bf16_tflops > 0));
  }
  Config bad = parse_config("", "test", {"cost.cluster=h9000"});
  CHECK_THROWS_WITH(load_cluster(bad), Catch::Contains("cost.cluster: no cluster 'h9000'"));
}
