// matmul and grouped matmul: forward against a naive triple loop, backward against central
// finite differences (f64), f32 against f64.
#include <catch2/catch.hpp>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// y = x w^T by the definition, in double.
Tensor naive_matmul(const Tensor& x, const Tensor& w) {
  const auto M = x.size(0), K = x.size(1), N = w.size(0);
  Tensor y = Tensor::zeros({M, N}, DType::f64);
  for (std::int64_t m = 0; m < M; ++m)
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t k = 0; k < K; ++k) y.data<double>()[m * N + n] += at(x, m * K + k) * at(w, n * K + k);
  return y;
}
}  // namespace

TEST_CASE("matmul forward equals the definition", "[ops][gemm]") {
  for (auto [M, N, K] : {std::tuple{1, 1, 1}, {3, 5, 7}, {17, 33, 9}}) {
    Tensor x = random({M, K}, 1), w = random({N, K}, 2), y = Tensor::empty({M, N}, DType::f64);
    ops::matmul_forward(y, x, w);
    CHECK(max_rel_err(y, naive_matmul(x, w)) < 1e-14);
  }
}

TEST_CASE("matmul backward matches finite differences, dw accumulates", "[ops][gemm]") {
  for (auto [M, N, K] : {std::tuple{1, 1, 1}, {3, 5, 7}, {6, 2, 11}}) {
    Tensor x = random({M, K}, 3), w = random({N, K}, 4), R = random({M, N}, 5);
    Tensor y = Tensor::empty({M, N}, DType::f64);
    auto loss = [&] {
      ops::matmul_forward(y, x, w);
      return dot(y, R);
    };
    Tensor dx = Tensor::empty({M, K}, DType::f64), dw = random({N, K}, 6), dw0 = cast(dw, DType::f64);
    ops::matmul_backward(dx, dw, R, x, w);
    CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-6);
    Tensor fd = numeric_grad(w, loss);
    for (std::int64_t i = 0; i < fd.numel(); ++i) fd.data<double>()[i] += at(dw0, i);  // += contract
    CHECK(max_rel_err(dw, fd) < 1e-6);
  }
}

TEST_CASE("matmul in f32 agrees with f64", "[ops][gemm]") {
  check_f32_matches_f64(
      [](DType t) {
        Tensor x = random({13, 31}, 7, 1, t), w = random({19, 31}, 8, 1, t), R = random({13, 19}, 9, 1, t);
        Tensor y = Tensor::empty({13, 19}, t), dx = Tensor::empty({13, 31}, t), dw = Tensor::zeros({19, 31}, t);
        ops::matmul_forward(y, x, w);
        ops::matmul_backward(dx, dw, R, x, w);
        return std::vector{y, dx, dw};
      },
      1e-5);
}

TEST_CASE("grouped matmul: each group is its own matmul, empty groups included", "[ops][gemm]") {
  const std::int64_t G = 4, N = 5, K = 3;
  const std::vector<std::int64_t> offsets = {0, 2, 2, 7, 9};  // group 1 receives no rows
  Tensor x = random({9, K}, 10), w = random({G, N, K}, 11), y = Tensor::empty({9, N}, DType::f64);
  ops::grouped_matmul_forward(y, x, w, offsets);
  for (std::int64_t g = 0; g < G; ++g) {
    const auto rows = offsets[g + 1] - offsets[g];
    Tensor wg = w.rows(g, 1).view({N, K});
    CHECK(max_rel_err(y.rows(offsets[g], rows), naive_matmul(x.rows(offsets[g], rows), wg), 1.0) < 1e-14);
  }

  Tensor R = random({9, N}, 12);
  auto loss = [&] {
    ops::grouped_matmul_forward(y, x, w, offsets);
    return dot(y, R);
  };
  Tensor dx = Tensor::empty({9, K}, DType::f64), dw = Tensor::zeros({G, N, K}, DType::f64);
  ops::grouped_matmul_backward(dx, dw, R, x, w, offsets);
  CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-6);
  CHECK(max_rel_err(dw, numeric_grad(w, loss)) < 1e-6);
}

TEST_CASE("gemm rejects mismatched shapes and offsets at the boundary", "[ops][gemm]") {
  Tensor x = random({3, 4}, 1), w = random({5, 6}, 2), y = Tensor::empty({3, 5}, DType::f64);
  CHECK_THROWS_WITH(ops::matmul_forward(y, x, w),
                    Catch::Contains("matmul_forward: x f64[3,4]@cpu and w f64[5,6]@cpu must be (M,K) and (N,K)"));
  Tensor w3 = random({2, 5, 4}, 3);
  const std::vector<std::int64_t> bad = {0, 2, 1};
  CHECK_THROWS_AS(ops::grouped_matmul_forward(y, x, w3, bad), ShapeError);
  Tensor xf = random({3, 4}, 1, 1, DType::f32), w4 = random({5, 4}, 2);
  CHECK_THROWS_WITH(ops::matmul_forward(y, xf, w4),
                    Catch::Contains("x f32[3,4]@cpu and w f64[5,4]@cpu must be (M,K) and (N,K) of one dtype"));
  Tensor yf = Tensor::empty({3, 6}, DType::f32), wf = random({5, 4}, 2, 1, DType::f32);
  CHECK_THROWS_WITH(ops::matmul_forward(yf, xf, wf),
                    Catch::Contains("matmul_forward: y is f32[3,6]@cpu, expected f32[3,5]"));
}
