#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("rope forward: closed form rotation, 'rotate half' pairing", "[ops][rope]") {
  // D = 4: pairs (0,2) at frequency 1 and (1,3) at theta^(-1/2).
  const double theta = 100.0;
  const std::int64_t T = 5;
  Tensor x = random({1, T, 1, 4}, 1), y = Tensor::empty({1, T, 1, 4}, DType::f64);
  ops::rope_forward(y, x, theta);
  for (std::int64_t p = 0; p < T; ++p)
    for (int i = 0; i < 2; ++i) {
      const double a = p * std::pow(theta, -2.0 * i / 4), x1 = at(x, p * 4 + i), x2 = at(x, p * 4 + i + 2);
      CHECK(at(y, p * 4 + i) == Approx(x1 * std::cos(a) - x2 * std::sin(a)).margin(1e-14));
      CHECK(at(y, p * 4 + i + 2) == Approx(x2 * std::cos(a) + x1 * std::sin(a)).margin(1e-14));
    }
}

TEST_CASE("rope makes q.k depend only on the position difference", "[ops][rope]") {
  // The same q and k vectors at every position: <R_m q, R_n k> is a function of m - n.
  const std::int64_t T = 6, D = 8;
  Tensor q = Tensor::empty({1, T, 1, D}, DType::f64), k = Tensor::empty({1, T, 1, D}, DType::f64);
  Tensor q0 = random({D}, 2), k0 = random({D}, 3);
  for (std::int64_t p = 0; p < T; ++p)
    for (std::int64_t c = 0; c < D; ++c)
      q.data<double>()[p * D + c] = at(q0, c), k.data<double>()[p * D + c] = at(k0, c);
  ops::rope_forward(q, q, 10000.0);  // in place
  ops::rope_forward(k, k, 10000.0);
  auto qk = [&](std::int64_t m, std::int64_t n) {
    double s = 0;
    for (std::int64_t c = 0; c < D; ++c) s += at(q, m * D + c) * at(k, n * D + c);
    return s;
  };
  CHECK(qk(3, 1) == Approx(qk(5, 3)).epsilon(1e-12));
  CHECK(qk(1, 4) == Approx(qk(2, 5)).epsilon(1e-12));
}

TEST_CASE("rope backward matches finite differences", "[ops][rope]") {
  for (auto shape : {Shape{1, 1, 1, 2}, Shape{2, 5, 3, 6}, Shape{1, 9, 2, 16}}) {
    Tensor x = random(shape, 4), R = random(shape, 5), y = Tensor::empty(shape, DType::f64);
    auto loss = [&] {
      ops::rope_forward(y, x, 500.0);
      return dot(y, R);
    };
    Tensor dx = Tensor::empty(shape, DType::f64);
    ops::rope_backward(dx, R, 500.0);
    CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-6);
  }
}

TEST_CASE("rope in f32 agrees with f64", "[ops][rope]") {
  check_f32_matches_f64(
      [](DType t) {
        Tensor x = random({2, 33, 2, 8}, 6, 1, t), y = Tensor::empty({2, 33, 2, 8}, t),
               dx = Tensor::empty({2, 33, 2, 8}, t);
        ops::rope_forward(y, x, 10000.0);
        ops::rope_backward(dx, x, 10000.0);
        return std::vector{y, dx};
      },
      1e-5);
}

TEST_CASE("rope rejects an odd head dimension", "[ops][rope]") {
  Tensor x = random({1, 2, 1, 3}, 1), y = Tensor::empty({1, 2, 1, 3}, DType::f64);
  CHECK_THROWS_WITH(ops::rope_forward(y, x, 10000.0), Catch::Contains("D even"));
}

TEST_CASE("rope interleaved: pairs (2i, 2i+1) rotated into halves, as HF's DeepseekV3", "[ops][rope]") {
  // transformers' apply_rotary_pos_emb_interleave: x viewed (.., D/2, 2), transposed to
  // (.., 2, D/2) (pair i's dims land at i and i + D/2), then rotate-half.
  const double theta = 100.0;
  const std::int64_t T = 5, D = 4;
  Tensor x = random({1, T, 1, D}, 11), y = Tensor::empty({1, T, 1, D}, DType::f64);
  ops::rope_forward(y, x, theta, ops::RopePairs::interleaved);
  for (std::int64_t p = 0; p < T; ++p)
    for (int i = 0; i < 2; ++i) {
      const double a = p * std::pow(theta, -2.0 * i / D), x1 = at(x, p * D + 2 * i), x2 = at(x, p * D + 2 * i + 1);
      CHECK(at(y, p * D + i) == Approx(x1 * std::cos(a) - x2 * std::sin(a)).margin(1e-14));
      CHECK(at(y, p * D + i + 2) == Approx(x2 * std::cos(a) + x1 * std::sin(a)).margin(1e-14));
    }
  Tensor same = x;
  CHECK_THROWS_AS(ops::rope_forward(same, x, theta, ops::RopePairs::interleaved), ShapeError);  // not in place
}

TEST_CASE("rope backward is forward's transpose, for both pairings: <R x, y> = <x, R^T y>", "[ops][rope]") {
  const std::int64_t B = 2, T = 7, H = 3, D = 8;
  for (auto pairs : {ops::RopePairs::half, ops::RopePairs::interleaved}) {
    const Tensor x = random({B, T, H, D}, 12), y = random({B, T, H, D}, 13);
    Tensor rx = Tensor::empty(x.shape(), DType::f64), rty = Tensor::empty(x.shape(), DType::f64);
    ops::rope_forward(rx, x, 1000.0, pairs);
    ops::rope_backward(rty, y, 1000.0, pairs);
    CHECK(dot(rx, y) == Approx(dot(x, rty)).epsilon(1e-13));
    // and the inverse: R^T R x = x
    Tensor back = Tensor::empty(x.shape(), DType::f64);
    ops::rope_backward(back, rx, 1000.0, pairs);
    CHECK(max_rel_err(back, x) < 1e-14);
  }
}
