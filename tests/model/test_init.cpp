// Initialisation does not depend on the layout: the experts a rank holds under expert
// parallelism get the values the same experts get with every expert in one process, also
// when a slice has an odd number of elements (a shared Gaussian would carry a cached draw
// from one slice into the next).
#include <catch2/catch.hpp>

#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;

namespace {
// Rank `r` of a group of `p` for construction only: the model asks for rank and size.
class FakeGroup final : public Communicator {
 public:
  FakeGroup(int r, int p) { rank_ = r, size_ = p; }
  Device device() const override { return Device::cpu; }
  void barrier() override {}

 protected:
  void do_all_reduce_sum(Tensor&) override {}
  void do_reduce_scatter_sum(Tensor&, const Tensor&) override {}
  void do_all_gather(Tensor&, const Tensor&) override {}
  void do_all_to_all_v(Tensor&, const Tensor&, const Split&) override {}
  void do_send(const Tensor&, int, int) override {}
  void do_recv(Tensor&, int, int) override {}
  void do_broadcast(Tensor&, int) override {}
};
}  // namespace

TEST_CASE("init: a rank's experts get the values they get unsharded, odd sizes included", "[model]") {
  ModelConfig c;
  c.d_model = 9, c.n_heads = 3, c.n_kv_heads = 1, c.expert_hidden = 5, c.ffn_hidden = 7, c.routed_experts = 4,
  c.top_k = 2, c.n_layers = 2, c.dense_layers = 1, c.vocab_size = 11;
  Transformer whole(c);
  whole.init(42);
  for (const auto& [r, p] : {std::pair{1, 2}, std::pair{1, 4}, std::pair{3, 4}}) {
    FakeGroup group(r, p);
    Transformer part(c, {.ep = &group, .chunks = {}});  // experts [r*4/p, (r+1)*4/p)
    part.init(42);
    const auto a = whole.params(), b = part.params();
    REQUIRE(a.size() == b.size());
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i]->name << " on rank " << r << " of " << p);
      const std::int64_t El = 4 / p;
      const Tensor want = a[i]->is_expert() ? a[i]->w.rows(r * El, El) : a[i]->w;
      CHECK(testing::max_rel_err(b[i]->w, want, 1e-30) == 0.0);
    }
  }
}

TEST_CASE("init: a tensor-parallel rank's shards are the blocks of the whole tensors", "[model]") {
  ModelConfig c;
  c.d_model = 8, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 6, c.ffn_hidden = 10, c.routed_experts = 4,
  c.shared_experts = 1, c.top_k = 2, c.n_layers = 2, c.dense_layers = 1, c.vocab_size = 12;
  Transformer whole(c);
  whole.init(7);
  for (int r = 0; r < 2; ++r) {
    FakeGroup group(r, 2);
    Transformer part(c, {.tp = &group, .chunks = {}});
    part.init(7);
    const auto a = whole.params(), b = part.params();
    REQUIRE(a.size() == b.size());
    int split = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      INFO(a[i]->name << " on tp rank " << r);
      REQUIRE(b[i]->full_shape() == a[i]->w.shape());
      if (!b[i]->is_split()) {
        CHECK(b[i]->tp_replicated != b[i]->is_expert());  // routed experts stay whole, reduced over edp
        CHECK(testing::max_rel_err(b[i]->w, a[i]->w, 1e-30) == 0.0);
        continue;
      }
      ++split;
      const int d = b[i]->split_dim;
      CHECK(b[i]->split_begin == r * a[i]->w.size(d) / 2);
      const Tensor want = take_shard(a[i]->w, d, b[i]->split_begin, b[i]->w.size(d));
      CHECK(testing::max_rel_err(b[i]->w, want, 1e-30) == 0.0);
      // put_shard is take_shard's inverse.
      Tensor back = Tensor::zeros(a[i]->w.shape(), DType::f32);
      put_shard(back, b[i]->w, d, b[i]->split_begin);
      CHECK(testing::max_rel_err(take_shard(back, d, b[i]->split_begin, b[i]->w.size(d)), want, 1e-30) == 0.0);
    }
    // embedding, head; q k v o x 2 blocks; dense gate up down; shared gate up down.
    CHECK(split == 2 + 8 + 3 + 3);
  }
}
