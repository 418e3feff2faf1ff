// Redundant experts' choice (model/replicas.h) by hand: which experts get replicas and where,
// the instance table, and ops::pick_instances over it.
#include <catch2/catch.hpp>

#include "kernels/ops.h"
#include "model/replicas.h"
#include "tests/support/testing.h"

using namespace moe;

using testing::ints;
using testing::values;

TEST_CASE("choose_replicas: the hottest experts, on the least loaded ranks of their node", "[replicas]") {
  // 8 experts on 4 ranks (2 each), one replica slot a rank.
  const std::vector<double> load = {100, 10, 10, 10, 10, 10, 10, 40};
  SECTION("one node") {
    // The replicas go to experts 0 (100 a copy), 0 (50), 7 (40 > 0's 33), 0 (33): expert 0's
    // on ranks 1, 2, 3 (least loaded first), expert 7's on rank 0 (room, and no copy of it).
    const ReplicaLayout l{.experts = 8, .ranks = 4, .local = 2, .slots = 1, .ranks_per_node = 4};
    CHECK(choose_replicas(l, load) == std::vector<std::int32_t>{7, 0, 0, 0});
  }
  SECTION("two nodes of two ranks: a replica stays on its expert's node") {
    // Expert 0 (node 0) can have one replica (rank 1), expert 7 (node 1) one (rank 2); then
    // rank 0's slot can hold only rank 1's experts (2 or 3) and rank 3's only rank 2's (4 or 5).
    const ReplicaLayout l{.experts = 8, .ranks = 4, .local = 2, .slots = 1, .ranks_per_node = 2};
    CHECK(choose_replicas(l, load) == std::vector<std::int32_t>{2, 0, 7, 4});
  }
  SECTION("experts without rows get no replica") {
    const ReplicaLayout l{.experts = 8, .ranks = 4, .local = 2, .slots = 1, .ranks_per_node = 4};
    // (expert 3 is rank 1's own)
    CHECK(choose_replicas(l, {0, 0, 0, 5, 0, 0, 0, 0}) == std::vector<std::int32_t>{3, -1, 3, 3});
  }
}

TEST_CASE("instance table and pick_instances: token n takes instance n mod the expert's instances",
          "[replicas][ops][routing]") {
  // 4 experts on 2 ranks, one slot each: instances 0 1 | 2 (slot of rank 0) | 3 4 | 5 (slot of rank 1).
  const ReplicaLayout l{.experts = 4, .ranks = 2, .local = 2, .slots = 1, .ranks_per_node = 2};
  const Tensor table = instance_table(l, {3, 0});  // rank 0's slot replicates expert 3, rank 1's expert 0
  CHECK(values(table) == std::vector<std::int32_t>{0, 2, 3, 4, 6, /*e0*/ 0, 5, /*e1*/ 1, /*e2*/ 3, /*e3*/ 4, 2});
  // 4 tokens x top-2; -1 dropped.
  const Tensor kept = ints({0, 3, 0, 1, 0, -1, 3, 2}, {4, 2});
  Tensor inst = Tensor::empty({4, 2}, DType::i32), counts = Tensor::empty({6}, DType::i32);
  ops::pick_instances(inst, counts, kept, table, 4);
  CHECK(values(inst) == std::vector<std::int32_t>{0, 4, 5, 1, 0, -1, 2, 3});
  CHECK(values(counts) == std::vector<std::int32_t>{2, 1, 1, 1, 1, 1});
  Tensor bad = instance_table(l, {3, 0});
  bad.data<std::int32_t>()[9] = 6;
  CHECK_THROWS_WITH(ops::pick_instances(inst, counts, kept, bad, 4), Catch::Contains("instance 6 outside [0, 6)"));
}
