// Run under mpirun: `moe train` on all ranks (data parallel) must match one process
// (MPI_COMM_SELF) on the same global batch at each of the first 20 steps, up to reduction order.
#include <catch2/catch.hpp>
#include <cmath>

#include "data/prepare.h"
#include "parallel/mpi_communicator.h"
#include "tests/support/corpus.h"
#include "config/config.h"
#include "trainer/train.h"

using namespace moe;

TEST_CASE("train: data parallel equals world size 1 at every step", "[mpi][trainer]") {
  MpiCommunicator world, self(MPI_COMM_SELF);
  REQUIRE(world.size() >= 2);
  const std::string corpus = "train_dp_corpus.txt", dir = "train_dp_data";
  if (world.rank() == 0) {
    testing::write_corpus(corpus, 400);
    data::prepare({.corpus = corpus, .out_dir = dir, .vocab_size = 300, .val_fraction = 0.1, .seed = 3});
  }
  world.barrier();
  // A micro MoE with every routing feature on; global batch = world x 2 sequences.
  const std::vector<std::string> common = {"data.dir=" + dir,
                                           "train.steps=20",
                                           "train.log_every=100",
                                           "train.eval_batches=1",
                                           "model.vocab_size=300",
                                           "model.seq_len=16",
                                           "model.d_model=16",
                                           "model.n_heads=2",
                                           "model.n_kv_heads=1",
                                           "model.ffn_hidden=24",
                                           "model.expert_hidden=8",
                                           "model.routed_experts=4",
                                           "model.top_k=2",
                                           "model.n_groups=2",
                                           "model.topk_groups=1",
                                           "model.aux_loss_coef=0.01",
                                           "model.bias_update_rate=0.01",
                                           "train.warmup_steps=2"};
  auto with = [&](std::string kv) {
    auto v = common;
    v.push_back(std::move(kv));
    return v;
  };
  const TrainResult dp = train(parse_config("", "test", with("train.micro_batch=2")), world);
  const TrainResult one =
      train(parse_config("", "test", with("train.micro_batch=" + std::to_string(2 * world.size()))), self);
  REQUIRE(dp.losses.size() == 20);
  REQUIRE(one.losses.size() == 20);
  for (std::size_t s = 0; s < 20; ++s) {
    INFO("step " << s + 1);
    CHECK(std::abs(dp.losses[s] - one.losses[s]) <= 1e-5 * std::abs(one.losses[s]));
  }
  CHECK(std::abs(dp.val_loss - one.val_loss) <= 1e-5 * one.val_loss);
  CHECK(dp.losses.back() < dp.losses.front());  // it learns
}
