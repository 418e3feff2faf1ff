// Run under mpirun: the skeleton trainer on all ranks (data parallel) must reach the same
// losses as one process (MPI_COMM_SELF) on the same global batch, up to reduction order.
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>

#include "parallel/communicator.h"
#include "trainer/config.h"
#include "trainer/skeleton.h"

using namespace moe;

TEST_CASE("skeleton trainer: data parallel equals world size 1", "[mpi][trainer]") {
  Communicator world, self(MPI_COMM_SELF);
  REQUIRE(world.size() >= 2);
  const std::string corpus = "skeleton_dp_corpus.txt";
  if (world.rank() == 0) {
    std::ofstream out(corpus);
    for (int i = 0; i < 200; ++i) out << "document " << i << " says " << (i * 7919 % 1000) << " things\n%\n";
  }
  world.barrier();
  // Global batch = world x micro_batch: the single process takes it all as its micro-batch.
  const std::vector<std::string> common = {"data.corpus=" + corpus, "train.steps=6", "train.log_every=100",
                                           "model.seq_len=16", "model.d_model=16", "model.n_heads=2",
                                           "model.n_kv_heads=1", "model.ffn_hidden=24", "model.vocab_size=257",
                                           "data.val_fraction=0.1"};
  auto with = [&](std::string kv) { auto v = common; v.push_back(std::move(kv)); return v; };
  const Config dp_cfg = parse_config("", "test", with("train.micro_batch=2"));
  const Config one_cfg = parse_config("", "test", with("train.micro_batch=" + std::to_string(2 * world.size())));
  const RunSummary dp = train_skeleton(dp_cfg, world);
  const RunSummary one = train_skeleton(one_cfg, self);
  CHECK(dp.tokens == one.tokens);
  CHECK(std::abs(dp.first_loss - one.first_loss) <= 1e-5 * one.first_loss);
  CHECK(std::abs(dp.last_loss - one.last_loss) <= 1e-5 * one.last_loss);
  CHECK(std::abs(dp.val_loss - one.val_loss) <= 1e-5 * one.val_loss);
  CHECK(dp.last_loss < dp.first_loss);  // it learns
}
