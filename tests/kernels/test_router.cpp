#include <catch2/catch.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "kernels/cuda/router_select.h"
#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
struct Routed {
  Tensor scores, index, gate;
  Routed(std::int64_t N, std::int64_t E, int k, DType t)
      : scores(Tensor::empty({N, E}, t)), index(Tensor::empty({N, k}, DType::i32)), gate(Tensor::empty({N, k}, t)) {}
};
}  // namespace

TEST_CASE("router forward: sigmoid scores and top-k of score + bias, by brute force", "[ops][router]") {
  const std::int64_t N = 6, E = 9;
  const int k = 3;
  Tensor logits = random({N, E}, 1, 3), bias = random({E}, 2, 0.2);
  ops::RouterSpec spec{.kind = ops::RouterKind::sigmoid, .top_k = k, .scaling = 2.5};
  Routed r(N, E, k, DType::f64);
  ops::router_forward(r.scores, r.index, r.gate, logits, bias, spec);
  for (std::int64_t n = 0; n < N; ++n) {
    std::vector<int> order(E);
    std::iota(order.begin(), order.end(), 0);
    auto c = [&](int e) { return 1 / (1 + std::exp(-at(logits, n * E + e))) + at(bias, e); };
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return c(a) > c(b); });
    double sum = 0;
    for (int i = 0; i < k; ++i) {
      CHECK(r.index.data<std::int32_t>()[n * k + i] == order[i]);
      sum += 1 / (1 + std::exp(-at(logits, n * E + order[i])));
    }
    for (int i = 0; i < k; ++i) {
      const double s = 1 / (1 + std::exp(-at(logits, n * E + order[i])));
      CHECK(at(r.scores, n * E + order[i]) == Approx(s).epsilon(1e-14));
      CHECK(at(r.gate, n * k + i) == Approx(s / sum * 2.5).epsilon(1e-14));  // gates from unbiased scores
    }
  }
}

TEST_CASE("router: group-limited routing keeps a token inside its best groups", "[ops][router]") {
  // Equal scores (logits 0); the bias decides. Groups of 2: {0,1} {2,3} {4,5} {6,7}.
  // Biased scores c = 0.5 + b: group sums of top-2 = 1.9, 2.0, 1.8, 1.6 -> groups 1 and 0 win;
  // expert 4 (c = 1.3, second best overall) is in a losing group and must not be chosen.
  const std::vector<double> b = {0.9, 0.0, 0.5, 0.5, 0.8, 0.0, 0.3, 0.3};
  Tensor logits = Tensor::zeros({1, 8}, DType::f64), bias = Tensor::empty({8}, DType::f64);
  std::copy(b.begin(), b.end(), bias.data<double>());
  Routed r(1, 8, 2, DType::f64);
  ops::router_forward(r.scores, r.index, r.gate, logits, bias, {.top_k = 2, .n_groups = 4, .topk_groups = 2});
  CHECK(r.index.data<std::int32_t>()[0] == 0);
  CHECK(r.index.data<std::int32_t>()[1] == 2);  // ties with expert 3 go to the lower index
  ops::router_forward(r.scores, r.index, r.gate, logits, bias, {.top_k = 2});
  CHECK(r.index.data<std::int32_t>()[1] == 4);  // without the group limit expert 4 wins
}

TEST_CASE("router: softmax scores sum to one and gates renormalise", "[ops][router]") {
  Tensor logits = random({4, 6}, 3, 2), bias = Tensor::zeros({6}, DType::f64);
  Routed r(4, 6, 2, DType::f64);
  ops::router_forward(r.scores, r.index, r.gate, logits, bias, {.kind = ops::RouterKind::softmax, .top_k = 2});
  for (std::int64_t n = 0; n < 4; ++n) {
    double s = 0;
    for (std::int64_t e = 0; e < 6; ++e) s += at(r.scores, n * 6 + e);
    CHECK(s == Approx(1.0).epsilon(1e-14));
    CHECK(at(r.gate, n * 2) + at(r.gate, n * 2 + 1) == Approx(1.0).epsilon(1e-14));
    CHECK(at(r.gate, n * 2) >= at(r.gate, n * 2 + 1));
  }
}

TEST_CASE("router backward matches finite differences", "[ops][router]") {
  const std::vector<ops::RouterSpec> specs = {
      {.kind = ops::RouterKind::sigmoid, .top_k = 2, .scaling = 2.5},
      {.kind = ops::RouterKind::sigmoid, .top_k = 3, .n_groups = 4, .topk_groups = 2, .normalize = false},
      {.kind = ops::RouterKind::softmax, .top_k = 2},
      {.kind = ops::RouterKind::softmax, .top_k = 1, .normalize = false},
      {.kind = ops::RouterKind::sigmoid, .top_k = 1, .normalize = true},
  };
  for (const auto& spec : specs) {
    const std::int64_t N = 5, E = 8;
    Tensor logits = random({N, E}, 4, 2), bias = random({E}, 5, 0.1), R = random({N, spec.top_k}, 6);
    Routed r(N, E, spec.top_k, DType::f64);
    auto loss = [&] {
      ops::router_forward(r.scores, r.index, r.gate, logits, bias, spec);
      return dot(r.gate, R);
    };
    loss();
    Tensor dlogits = Tensor::empty({N, E}, DType::f64);
    ops::router_backward(dlogits, R, r.scores, r.index, spec);
    CHECK(max_rel_err(dlogits, numeric_grad(logits, loss), 1e-3) < 1e-6);
  }
}

TEST_CASE("router in f32 agrees with f64", "[ops][router]") {
  const ops::RouterSpec spec{.top_k = 4, .n_groups = 4, .topk_groups = 2, .scaling = 2.5};
  check_f32_matches_f64(
      [&](DType t) {
        Tensor logits = random({33, 16}, 7, 2, t), bias = random({16}, 8, 0.1, t), R = random({33, 4}, 9, 1, t);
        Routed r(33, 16, 4, t);
        ops::router_forward(r.scores, r.index, r.gate, logits, bias, spec);
        Tensor dlogits = Tensor::empty({33, 16}, t);
        ops::router_backward(dlogits, R, r.scores, r.index, spec);
        return std::vector{r.scores, r.gate, dlogits};
      },
      1e-5);
}

TEST_CASE("router rejects a top-k the groups cannot reach", "[ops][router]") {
  Tensor logits = random({1, 8}, 1), bias = Tensor::zeros({8}, DType::f64);
  Routed r(1, 8, 5, DType::f64);
  CHECK_THROWS_WITH(
      ops::router_forward(r.scores, r.index, r.gate, logits, bias, {.top_k = 5, .n_groups = 4, .topk_groups = 2}),
      Catch::Contains("top_k 5 exceeds the 4 experts reachable"));
}

TEST_CASE("the CUDA kernel's selection (scan form) picks the CPU reference's experts, ties included", "[ops][router]") {
  // router_select.h is plain C++ that nvcc also compiles for the GPU: here it runs on the host
  // against the CPU's sort form. Logits from a handful of values make ties everywhere.
  const std::int64_t N = 400;
  const float levels[] = {-1.f, 0.f, 0.5f, 1.f};
  for (const auto& [E, K, G, TG] :
       {std::array<int, 4>{9, 3, 1, 1}, {64, 8, 8, 4}, {16, 2, 4, 1}, {12, 4, 6, 6}, {8, 3, 8, 3}}) {
    INFO("E " << E << " K " << K << " groups " << TG << " of " << G);
    Tensor logits = Tensor::empty({N, E}, DType::f32), bias = Tensor::zeros({E}, DType::f32);
    for (std::int64_t i = 0; i < N * E; ++i) logits.data<float>()[i] = levels[(i * 7 + i / 5) % 4];
    for (int e = 0; e < E; e += 3) bias.data<float>()[e] = 0.25f;
    const ops::RouterSpec spec{.kind = ops::RouterKind::sigmoid, .top_k = K, .n_groups = G, .topk_groups = TG};
    Routed r(N, E, K, DType::f32);
    ops::router_forward(r.scores, r.index, r.gate, logits, bias, spec);
    std::int64_t differ = 0;
    std::vector<std::int32_t> idx(static_cast<std::size_t>(K));
    for (std::int64_t n = 0; n < N; ++n) {
      cuda::router_select(idx.data(), r.scores.data<float>() + n * E, bias.data<float>(), E, K, G, TG);
      differ += !std::equal(idx.begin(), idx.end(), r.index.data<std::int32_t>() + n * K);
    }
    CHECK(differ == 0);
  }
}
