// MoE layer on hand-built routing cases: capacity drops, and auxiliary-loss-free balancing.
#include <catch2/catch.hpp>
#include <algorithm>

#include "model/moe.h"
#include "model/router.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
ModelConfig micro(std::int64_t E, std::int64_t K) {
  ModelConfig c;
  c.d_model = 4, c.routed_experts = E, c.top_k = K, c.expert_hidden = 3, c.shared_experts = 0;
  return c;
}
void set_all(MoE& m, float router_value) {
  for (Param* p : m.params()) {
    if (p->name.find("gate.weight") != std::string::npos && p->w.ndim() == 2)
      std::fill_n(p->w.data<float>(), p->w.numel(), router_value);
    else p->w.copy_from(random(p->w.shape(), 5, 0.5, DType::f32));
  }
}
}  // namespace

TEST_CASE("moe: capacity factor drops assignments past an expert's capacity, in token order", "[model][moe]") {
  ModelConfig c = micro(2, 1);
  c.capacity_factor = 0.5;  // cap = ceil(0.5 * 4 tokens * 1 / 2 experts) = 1
  MoE m(c, "mlp.");
  set_all(m, 0.f);                   // equal scores for every expert...
  m.bias().data<float>()[0] = 0.1f;  // ...the bias sends every token to expert 0
  Tensor x = random({4, 4}, 1, 1, DType::f32), out = Tensor::empty({4, 4}, DType::f32),
         aux = Tensor::zeros({1}, DType::f64);
  m.forward(out, x, 1, 4, aux);
  CHECK(m.load() == std::vector<std::int64_t>{4, 0});
  CHECK(m.dropped() == 3);
  // Token 0 keeps its expert; tokens 1..3 are dropped and (no shared expert) get zero.
  double row0 = 0, rest = 0;
  for (int c_ = 0; c_ < 4; ++c_) row0 += std::abs(out.data<float>()[c_]);
  for (int i = 4; i < 16; ++i) rest += std::abs(out.data<float>()[i]);
  CHECK(row0 > 0);
  CHECK(rest == 0);
}

TEST_CASE("moe: dropless by default", "[model][moe]") {
  MoE m(micro(2, 1), "mlp.");
  set_all(m, 0.f);
  m.bias().data<float>()[0] = 0.1f;
  Tensor x = random({4, 4}, 1, 1, DType::f32), out = Tensor::empty({4, 4}, DType::f32),
         aux = Tensor::zeros({1}, DType::f64);
  m.forward(out, x, 1, 4, aux);
  CHECK(m.dropped() == 0);
}

TEST_CASE("moe: the balancing bias moves a skewed load toward balance", "[model][moe]") {
  ModelConfig c = micro(4, 1);
  MoE m(c, "mlp.");
  set_all(m, 0.f);
  // Router skewed toward expert 0 (its logit is larger for every token of a positive input);
  // the other experts' logits vary from token to token, so a balance exists.
  for (Param* p : m.params())
    if (p->name == "mlp.gate.weight") {
      p->w.copy_from(random({4, 4}, 3, 0.3, DType::f32));
      std::fill_n(p->w.data<float>(), 4, 0.5f);
    }
  Tensor x = Tensor::empty({64, 4}, DType::f32), out = Tensor::empty({64, 4}, DType::f32),
         aux = Tensor::zeros({1}, DType::f64);
  Tensor r = random({64, 4}, 2, 1, DType::f32);
  for (std::int64_t i = 0; i < 64 * 4; ++i) x.data<float>()[i] = 1.0f + 0.5f * r.data<float>()[i];
  auto imbalance = [&] {
    m.forward(out, x, 1, 64, aux);
    const auto& l = m.load();
    return double(*std::max_element(l.begin(), l.end())) / (64.0 / 4);
  };
  const double before = imbalance();
  CHECK(before == 4.0);  // every token on expert 0
  for (int step = 0; step < 200; ++step) {
    imbalance();
    m.update_bias(std::vector<double>(m.load().begin(), m.load().end()), 0.01);
  }
  CHECK(imbalance() < 1.5);
}

TEST_CASE("route_capacity keeps each expert's first assignments in token order", "[moe][router]") {
  // 4 tokens x top-2 over 2 experts: every token picks both, so each expert gets 4; a
  // capacity of 4 (factor 1.0: ceil(1.0 * 8 / 2)) drops nothing, 2 (factor 0.5) the last two each.
  const std::vector<std::int32_t> idx = {0, 1, 1, 0, 0, 1, 1, 0};
  Tensor index = Tensor::empty({4, 2}, DType::i32);
  std::copy(idx.begin(), idx.end(), index.data<std::int32_t>());
  auto run = [&](std::int64_t cap, std::int64_t n0, std::int64_t n1) {
    Tensor kept = Tensor::empty({4, 2}, DType::i32), counts = Tensor::empty({2, 2}, DType::i32);
    ops::route_capacity(kept, counts, index, cap, n0, n1);
    const std::int32_t *k = kept.data<std::int32_t>(), *c = counts.data<std::int32_t>();
    return std::pair{std::vector<std::int32_t>(k, k + 8), std::vector<std::int32_t>(c, c + 4)};
  };
  CHECK(run(4, 0, 4) == std::pair{idx, std::vector<std::int32_t>{4, 4, 4, 4}});
  CHECK(run(-1, 0, 4) == run(4, 0, 4));
  CHECK(run(2, 0, 4) ==
        std::pair{std::vector<std::int32_t>{0, 1, 1, 0, -1, -1, -1, -1}, std::vector<std::int32_t>{4, 4, 2, 2}});
  // A tensor-parallel rank's share (tokens [2, 4)): its own assignments and counts only, the
  // capacity still counted over every token, so all of them are past it.
  CHECK(run(2, 2, 4) == std::pair{std::vector<std::int32_t>(8, -1), std::vector<std::int32_t>{2, 2, 0, 0}});
}
