// Run under mpirun: 2 ranks (ep 2, one node) or 4 (ep 4 over two simulated nodes of 2: the
// hierarchical dispatch, replicas kept on their expert's node). Redundant experts against the
// same run without: a skewed router (debug.collapse_routing: every token's first choice is
// expert 0), one replica slot per rank chosen at step 10 from the loads of steps 1-10. The
// losses, gradient norms and weights equal the run without replicas (1e-6: an expert's weight
// gradient is summed in two parts), and the most loaded rank's share of the rows falls.
#include <catch2/catch.hpp>

#include <cstdio>
#include <numeric>

#include "tests/support/corpus.h"
#include "tests/support/mpi_corpus.h"
#include "tests/support/testing.h"
#include "trainer/train.h"

using namespace moe;

namespace {
double mean(const std::vector<double>& v, std::size_t begin, std::size_t end) {
  return std::accumulate(v.begin() + std::ptrdiff_t(begin), v.begin() + std::ptrdiff_t(end), 0.0) / double(end - begin);
}
}  // namespace

TEST_CASE("redundant experts: training unchanged, the hot expert's rows shared", "[mpi][trainer]") {
  MpiCommunicator world;
  const int P = world.size();
  REQUIRE((P == 2 || P == 4));
  const std::string dir = testing::prepared_corpus(world, "redundant_data");
  const std::string precision = GENERATE("fp32", "bf16");
  std::vector<std::string> common = testing::micro_moe(
      {"data.dir=" + dir, "model.seq_len=16", "train.steps=20", "train.log_every=100", "train.eval_batches=1",
       "train.micro_batch=2", "train.grad_accum=2", "parallel.ep=" + std::to_string(P), "debug.collapse_routing=true",
       "parallel.rebalance_every=10", "precision=" + precision});
  if (P == 4) common.push_back("parallel.ranks_per_node=2");
  auto run = [&](const char* redundant) {
    auto kv = common;
    kv.push_back(std::string("parallel.redundant_experts=") + redundant);
    Trainer trainer(parse_config("", "test", kv), world);
    TrainResult r = trainer.run();
    return std::make_pair(r, trainer.gather_weights());
  };
  const auto [plain, plain_w] = run("0");
  const auto [spread, spread_w] = run("1");
  REQUIRE(spread.losses.size() == 20);
  for (std::size_t i = 0; i < 20; ++i) {
    CHECK(spread.losses[i] == Approx(plain.losses[i]).epsilon(1e-6));
    CHECK(spread.grad_norms[i] == Approx(plain.grad_norms[i]).epsilon(1e-6));
  }
  double worst = 0;
  for (const auto& [name, w] : plain_w) worst = std::max(worst, testing::max_rel_err(spread_w.at(name), w));
  CHECK(worst <= 1e-6);
  const auto &a = spread.rank_imbalance, &b = plain.rank_imbalance;
  if (world.rank() == 0)
    std::printf(
        "%s np %d: most loaded rank / mean, steps 1-10 and 11-20: without replicas %.3f, %.3f; with one slot a rank "
        "%.3f, %.3f; weights within %.1e\n",
        precision.c_str(), P, mean(b, 0, 10), mean(b, 10, 20), mean(a, 0, 10), mean(a, 10, 20), worst);
  // Before the first choice the slots are empty: the same rows on the same ranks.
  CHECK(mean(a, 0, 10) == Approx(mean(b, 0, 10)));
  // Expert 0 takes half of all rows: its owner's rank carries far more than the mean until a
  // replica shares them. (What remains: this router sends most of a micro-batch's second
  // choices to one expert, another each step, a hot spot no choice made in advance can
  // follow, and how much of it there is depends on the data.) Measured at np 2: 1.42 -> 1.29
  // (fp32 and bf16) on the corpus as prepared since the held-out split is a seeded
  // permutation; 1.48 -> 1.22 before. Required: a tenth of the mean off the most loaded rank.
  CHECK(mean(b, 10, 20) > 1.3);
  CHECK(mean(a, 10, 20) < mean(b, 10, 20) - 0.1);
}
