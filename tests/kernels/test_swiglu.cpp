#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("swiglu forward: closed form silu(g) * u", "[ops][swiglu]") {
  Tensor g = random({3, 5}, 1, 4), u = random({3, 5}, 2), h = Tensor::empty({3, 5}, DType::f64);
  ops::swiglu_forward(h, g, u);
  for (std::int64_t i = 0; i < 15; ++i)
    CHECK(at(h, i) == Approx(at(g, i) / (1 + std::exp(-at(g, i))) * at(u, i)).epsilon(1e-14));
}

TEST_CASE("swiglu backward matches finite differences", "[ops][swiglu]") {
  for (auto shape : {Shape{1, 1}, Shape{4, 7}, Shape{3, 65}}) {
    Tensor g = random(shape, 3, 5), u = random(shape, 4), R = random(shape, 5), h = Tensor::empty(shape, DType::f64);
    auto loss = [&] {
      ops::swiglu_forward(h, g, u);
      return dot(h, R);
    };
    Tensor dg = Tensor::empty(shape, DType::f64), du = Tensor::empty(shape, DType::f64);
    ops::swiglu_backward(dg, du, R, g, u);
    CHECK(max_rel_err(dg, numeric_grad(g, loss)) < 1e-6);
    CHECK(max_rel_err(du, numeric_grad(u, loss)) < 1e-6);
  }
}

TEST_CASE("swiglu in f32 agrees with f64", "[ops][swiglu]") {
  check_f32_matches_f64(
      [](DType t) {
        Tensor g = random({7, 33}, 6, 6, t), u = random({7, 33}, 7, 1, t), R = random({7, 33}, 8, 1, t);
        Tensor h = Tensor::empty({7, 33}, t), dg = Tensor::empty({7, 33}, t), du = Tensor::empty({7, 33}, t);
        ops::swiglu_forward(h, g, u);
        ops::swiglu_backward(dg, du, R, g, u);
        return std::vector{h, dg, du};
      },
      1e-5);
}
