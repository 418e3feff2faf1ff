#include <catch2/catch.hpp>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("embedding forward gathers table rows", "[ops][embedding]") {
  Tensor table = random({11, 5}, 1), tokens = random_ints({7}, 2, 0, 10), out = Tensor::empty({7, 5}, DType::f64);
  ops::embedding_forward(out, tokens, table);
  for (std::int64_t n = 0; n < 7; ++n)
    for (std::int64_t c = 0; c < 5; ++c) CHECK(at(out, n * 5 + c) == at(table, tokens.data<std::int32_t>()[n] * 5 + c));
}

TEST_CASE("embedding backward matches finite differences with repeated tokens", "[ops][embedding]") {
  for (auto [V, C, N] : {std::tuple{1, 1, 1}, {4, 3, 9}, {13, 7, 5}}) {
    Tensor table = random({V, C}, 3), tokens = random_ints({N}, 4, 0, V - 1), R = random({N, C}, 5);
    Tensor out = Tensor::empty({N, C}, DType::f64);
    auto loss = [&] {
      ops::embedding_forward(out, tokens, table);
      return dot(out, R);
    };
    Tensor dtable = Tensor::zeros({V, C}, DType::f64);
    ops::embedding_backward(dtable, R, tokens);
    CHECK(max_rel_err(dtable, numeric_grad(table, loss)) < 1e-6);
  }
}

TEST_CASE("embedding rejects tokens outside the vocabulary", "[ops][embedding]") {
  Tensor table = random({4, 2}, 1), out = Tensor::empty({1, 2}, DType::f64), tokens = Tensor::empty({1}, DType::i32);
  tokens.data<std::int32_t>()[0] = 4;
  CHECK_THROWS_WITH(ops::embedding_forward(out, tokens, table), Catch::Contains("token 4 at row 0 outside [0, 4)"));
}

TEST_CASE("embedding: -1 marks another rank's row only for a sharded table", "[kernels]") {
  Tensor table = testing::cast(testing::random({4, 3}, 2), DType::f32), out = Tensor::empty({2, 3}, DType::f32);
  Tensor tokens = Tensor::empty({2}, DType::i32);
  tokens.data<std::int32_t>()[0] = -1, tokens.data<std::int32_t>()[1] = 2;
  CHECK_THROWS_WITH(ops::embedding_forward(out, tokens, table), Catch::Contains("token -1 at row 0 outside [0, 4)"));
  ops::embedding_forward(out, tokens, table, /*sharded=*/true);
  for (int c = 0; c < 3; ++c) {
    CHECK(out.data<float>()[c] == 0.f);
    CHECK(out.data<float>()[3 + c] == table.data<float>()[2 * 3 + c]);
  }
  Tensor dtable = Tensor::zeros({4, 3}, DType::f32), dout = Tensor::empty({2, 3}, DType::f32);
  std::fill_n(dout.data<float>(), 6, 1.f);
  ops::embedding_backward(dtable, dout, tokens, true);
  double total = 0;
  for (int i = 0; i < 12; ++i) total += dtable.data<float>()[i];
  CHECK(total == 3.0);  // row 2 only
}
