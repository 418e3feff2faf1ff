#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

// With a constant gradient g the bias-corrected moments are exactly g and g^2 at every step,
// so each step moves a parameter by lr * g / (|g| + eps) after the decay p *= 1 - lr*wd.
TEST_CASE("adamw: closed form under a constant gradient, with decoupled weight decay", "[ops][adamw]") {
  const std::int64_t n = 37;
  Tensor p = random({n}, 1, 1, DType::f32), g = random({n}, 2, 1, DType::f32);
  Tensor m = Tensor::zeros({n}, DType::f32), v = Tensor::zeros({n}, DType::f32);
  std::vector<double> expect(n);
  for (std::int64_t i = 0; i < n; ++i) expect[i] = at(p, i);
  ops::AdamWSpec s{.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .step = 1};
  for (s.step = 1; s.step <= 5; ++s.step) {
    ops::adamw_step(p, m, v, g, s);
    for (std::int64_t i = 0; i < n; ++i)
      expect[i] = expect[i] * (1 - s.lr * s.weight_decay) - s.lr * at(g, i) / (std::abs(at(g, i)) + s.eps);
  }
  for (std::int64_t i = 0; i < n; ++i) CHECK(at(p, i) == Approx(expect[i]).epsilon(1e-5));
}

TEST_CASE("adamw: moments follow their recurrences", "[ops][adamw]") {
  Tensor p = Tensor::zeros({3}, DType::f32), m = Tensor::zeros({3}, DType::f32), v = Tensor::zeros({3}, DType::f32);
  Tensor g1 = random({3}, 3, 1, DType::f32), g2 = random({3}, 4, 1, DType::f32);
  ops::AdamWSpec s;
  ops::adamw_step(p, m, v, g1, s);
  s.step = 2;
  ops::adamw_step(p, m, v, g2, s);
  for (std::int64_t i = 0; i < 3; ++i) {
    CHECK(at(m, i) == Approx(0.9 * 0.1 * at(g1, i) + 0.1 * at(g2, i)).epsilon(1e-6));
    CHECK(at(v, i) == Approx(0.95 * 0.05 * at(g1, i) * at(g1, i) + 0.05 * at(g2, i) * at(g2, i)).epsilon(1e-6));
  }
}

TEST_CASE("adamw rejects mismatched state", "[ops][adamw]") {
  Tensor p = Tensor::zeros({3}, DType::f32), m = Tensor::zeros({4}, DType::f32), v = Tensor::zeros({3}, DType::f32);
  CHECK_THROWS_WITH(ops::adamw_step(p, m, v, v, {}), Catch::Contains("adamw_step: m is f32[4]@cpu"));
}
