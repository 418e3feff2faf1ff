#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("cross-entropy forward: uniform logits give log V, ignored rows give 0", "[ops][cross_entropy]") {
  const std::int64_t N = 4, V = 10;
  Tensor logits = Tensor::zeros({N, V}, DType::f64), targets = random_ints({N}, 1, 0, V - 1),
         losses = Tensor::empty({N}, DType::f64);
  for (std::int64_t i = 0; i < N * V; ++i) logits.data<double>()[i] = 2.5;  // any constant
  targets.data<std::int32_t>()[2] = -1;
  ops::cross_entropy_forward(losses, logits, targets);
  for (std::int64_t n = 0; n < N; ++n)
    CHECK(at(losses, n) == Approx(n == 2 ? 0.0 : std::log(double(V))).epsilon(1e-14));
}

TEST_CASE("cross-entropy is stable for large logits", "[ops][cross_entropy]") {
  Tensor logits = Tensor::empty({1, 2}, DType::f32), targets = Tensor::empty({1}, DType::i32),
         losses = Tensor::empty({1}, DType::f32);
  logits.data<float>()[0] = 1000.f, logits.data<float>()[1] = 0.f;
  targets.data<std::int32_t>()[0] = 1;
  ops::cross_entropy_forward(losses, logits, targets);
  CHECK(losses.data<float>()[0] == Approx(1000.0));
}

TEST_CASE("cross-entropy backward matches finite differences", "[ops][cross_entropy]") {
  for (auto [N, V] : {std::pair{1, 1}, {5, 7}, {3, 130}}) {
    Tensor logits = random({N, V}, 2, 3), targets = random_ints({N}, 3, -1, V - 1), dl = random({N}, 4);
    Tensor losses = Tensor::empty({N}, DType::f64);
    auto loss = [&] {
      ops::cross_entropy_forward(losses, logits, targets);
      return dot(losses, dl);
    };
    Tensor dlogits = Tensor::empty({N, V}, DType::f64);
    ops::cross_entropy_backward(dlogits, dl, logits, targets);
    CHECK(max_rel_err(dlogits, numeric_grad(logits, loss), 1e-3) < 1e-6);
  }
}

TEST_CASE("cross-entropy in f32 agrees with f64", "[ops][cross_entropy]") {
  check_f32_matches_f64(
      [](DType t) {
        Tensor logits = random({6, 300}, 5, 8, t), targets = random_ints({6}, 6, 0, 299), dl = random({6}, 7, 1, t);
        Tensor losses = Tensor::empty({6}, t), dlogits = Tensor::empty({6, 300}, t);
        ops::cross_entropy_forward(losses, logits, targets);
        ops::cross_entropy_backward(dlogits, dl, logits, targets);
        return std::vector{losses, dlogits};
      },
      1e-5);
}

TEST_CASE("cross-entropy rejects targets outside the vocabulary", "[ops][cross_entropy]") {
  Tensor logits = random({1, 3}, 1), targets = Tensor::empty({1}, DType::i32), losses = Tensor::empty({1}, DType::f64);
  targets.data<std::int32_t>()[0] = 3;
  CHECK_THROWS_WITH(ops::cross_entropy_forward(losses, logits, targets), Catch::Contains("target 3 at row 0"));
}
