// Layout resolution and rejection (no MPI needed: the world size is an argument).
#include <catch2/catch.hpp>

#include "kernels/error.h"
#include "parallel/mesh.h"

using namespace moe;

TEST_CASE("layout: dp defaults to the ranks left by tp and pp, coordinates follow tp-dp-pp order", "[layout]") {
  const Config cfg =
      parse_config("", "l.yaml", {"parallel.tp=2", "parallel.ep=2", "model.n_layers=2", "parallel.pp=2"});
  const Layout l = resolve_layout(cfg, 16);
  CHECK(l.dp == 4);
  CHECK(l.edp() == 4);
  const Coords c = coords_of(l, 13);  // 13 = (1*4 + 2)*2 + 1
  CHECK((c.pp == 1 && c.dp == 2 && c.tp == 1));
  CHECK((c.ep == (2 * 2 + 1) % 2 && c.edp == (2 * 2 + 1) / 2));
}

TEST_CASE("layout: impossible layouts are one-line errors with the numbers", "[layout]") {
  auto fails = [](std::vector<std::string> sets, int world, const std::string& what) {
    INFO(what);
    try {
      resolve_layout(parse_config("", "l.yaml", sets), world);
      FAIL("accepted");
    } catch (const ConfigError& e) {
      CHECK_THAT(e.what(), Catch::Contains(what));
    }
  };
  fails({"parallel.dp=2", "parallel.tp=2"}, 8, "pp x dp x tp = 1 x 2 x 2 = 4 ranks, but mpirun started 8");
  fails({"parallel.tp=2", "parallel.pp=2", "model.n_layers=2"}, 6, "6 ranks cannot be split into tp = 2 x pp = 2");
  fails({"parallel.ep=3"}, 6, "parallel.ep: 3 does not divide model.routed_experts = 8");  // from the config rules
  fails({"parallel.ep=4"}, 2, "parallel.ep = 4 must divide dp x tp = 2 x 1 = 2");
  fails({"parallel.tp=2", "model.vocab_size=1001"}, 2, "parallel.tp = 2 must divide model.vocab_size = 1001");
}
