// Full activation recomputation (train.recompute): the same loss and the same gradients, bit
// for bit, as keeping every activation; and less memory held after the forward.
#include <catch2/catch.hpp>

#include <cstring>

#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;

TEST_CASE("recompute: gradients equal keeping every activation, bit for bit", "[model]") {
  ModelConfig c;
  c.d_model = 16, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 8, c.ffn_hidden = 24, c.routed_experts = 8,
  c.top_k = 2, c.n_layers = 3, c.dense_layers = 1, c.vocab_size = 50, c.seq_len = 8, c.aux_loss_coef = 0.01;
  const std::int64_t B = 3, T = 8;
  const Tensor tokens = testing::random_ints({B * T}, 1, 0, 49), targets = testing::random_ints({B * T}, 2, 0, 49);
  auto run = [&](bool recompute, std::int64_t& held) {
    Transformer model(c);
    model.init(7);
    model.set_recompute(recompute);
    const auto before = tensor_memory().live;
    const auto loss = model.forward(tokens, targets, B, T);
    held = tensor_memory().live - before;  // what forward left for backward
    model.backward(1.0 / double(B * T), 1.0 / double(B));
    std::vector<Tensor> grads;
    for (Param* p : model.params()) grads.push_back(p->g);
    return std::pair{loss.ce_sum + loss.aux_sum, grads};
  };
  std::int64_t kept = 0, recomputed = 0;
  const auto [loss_keep, g_keep] = run(false, kept);
  const auto [loss_rec, g_rec] = run(true, recomputed);
  CHECK(loss_keep == loss_rec);
  REQUIRE(g_keep.size() == g_rec.size());
  for (std::size_t i = 0; i < g_keep.size(); ++i) {
    INFO("parameter " << i);
    REQUIRE(g_keep[i].nbytes() == g_rec[i].nbytes());
    CHECK(std::memcmp(g_keep[i].raw(), g_rec[i].raw(), g_keep[i].nbytes()) == 0);
  }
  CHECK(recomputed < kept / 2);
}
