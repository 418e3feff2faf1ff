#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("rmsnorm forward: closed form on constant rows", "[ops][rmsnorm]") {
  // Row of constant c: y = c / sqrt(c^2 + eps) * w.
  const double c = -1.5, eps = 1e-2;
  Tensor x = Tensor::empty({2, 6}, DType::f64), w = random({6}, 1), y = Tensor::empty({2, 6}, DType::f64),
         rstd = Tensor::empty({2}, DType::f64);
  for (std::int64_t i = 0; i < 12; ++i) x.data<double>()[i] = c;
  ops::rmsnorm_forward(y, rstd, x, w, eps);
  for (std::int64_t i = 0; i < 12; ++i)
    CHECK(at(y, i) == Approx(c / std::sqrt(c * c + eps) * at(w, i % 6)).epsilon(1e-14));
}

TEST_CASE("rmsnorm backward matches finite differences", "[ops][rmsnorm]") {
  // eps 1e-3 keeps the C = 1 case well conditioned (there y ~ sign(x) w and dy/dx ~ eps).
  for (auto [N, C] : {std::pair{1, 1}, {3, 7}, {5, 64}}) {
    Tensor x = random({N, C}, 2), w = random({C}, 3), R = random({N, C}, 4);
    Tensor y = Tensor::empty({N, C}, DType::f64), rstd = Tensor::empty({N}, DType::f64);
    auto loss = [&] {
      ops::rmsnorm_forward(y, rstd, x, w, 1e-3);
      return dot(y, R);
    };
    loss();
    Tensor dx = Tensor::empty({N, C}, DType::f64), dw = Tensor::zeros({C}, DType::f64);
    ops::rmsnorm_backward(dx, dw, R, x, w, rstd);
    CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-6);
    CHECK(max_rel_err(dw, numeric_grad(w, loss)) < 1e-6);
  }
}

TEST_CASE("rmsnorm in f32 agrees with f64", "[ops][rmsnorm]") {
  check_f32_matches_f64(
      [](DType t) {
        Tensor x = random({9, 130}, 5, 3, t), w = random({130}, 6, 1, t), R = random({9, 130}, 7, 1, t);
        Tensor y = Tensor::empty({9, 130}, t), rstd = Tensor::empty({9}, t), dx = Tensor::empty({9, 130}, t),
               dw = Tensor::zeros({130}, t);
        ops::rmsnorm_forward(y, rstd, x, w, 1e-6);
        ops::rmsnorm_backward(dx, dw, R, x, w, rstd);
        return std::vector{y, dx, dw};
      },
      1e-5);
}
