#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// M rows of W slots reading N input rows, about a third of them -1 (no term).
Tensor random_slots(std::int64_t M, std::int64_t W, std::int64_t N, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> v(static_cast<std::size_t>(M * W));
  for (auto& s : v) s = rng() % 3 == 0 ? -1 : static_cast<std::int32_t>(rng() % std::uint64_t(N));
  return ints(v, {M, W});
}
}  // namespace

TEST_CASE("gather_rows copies whole rows of any dtype, zeros for -1", "[ops][rows]") {
  const Tensor x = random({9, 37}, 1, 1, DType::f32);
  Tensor b = Tensor::empty({9, 37}, DType::bf16), q = Tensor::empty({9, 37}, DType::e4m3),
         s = Tensor::empty({9, 1}, DType::f32);
  ops::convert(b, x);
  ops::quantize_1x128(q, s, x);
  const std::vector<std::int32_t> src = {8, 0, -1, 0, 3, 8, 1};
  for (const Tensor* in : std::initializer_list<const Tensor*>{&x, &b, &q}) {
    Tensor out = Tensor::empty({7, 37}, in->dtype());
    ops::gather_rows(out, *in, ints(src));
    const std::size_t row = in->nbytes() / 9;
    const std::vector<char> zeros(row, 0);
    for (std::size_t r = 0; r < src.size(); ++r) {
      const char* got = static_cast<const char*>(out.raw()) + r * row;
      const char* want = src[r] < 0 ? zeros.data() : static_cast<const char*>(in->raw()) + std::size_t(src[r]) * row;
      CHECK(std::memcmp(got, want, row) == 0);
    }
  }
  Tensor none = Tensor::empty({0, 37}, DType::f32);
  ops::gather_rows(none, x, ints({}));
}

TEST_CASE("combine_rows equals the dense product of its selection matrix with the input", "[ops][rows]") {
  // The oracle: S (M,N) with S[m, slots[m,w]] += weights[m,w] for each slot, then S @ in in f64.
  const std::int64_t M = 23, N = 17, C = 11, W = 4;
  const Tensor slots = random_slots(M, W, N, 7), in = random({N, C}, 2), w = random({M, W}, 3),
               base = random({M, C}, 4);
  for (bool weighted : {false, true})
    for (bool accumulate : {false, true}) {
      INFO((weighted ? "weighted" : "plain") << (accumulate ? " accumulate" : ""));
      std::vector<double> S(std::size_t(M * N), 0.0);
      for (std::int64_t j = 0; j < M * W; ++j)
        if (const auto s = slots.data<std::int32_t>()[j]; s >= 0) S[(j / W) * N + s] += weighted ? at(w, j) : 1.0;
      Tensor out = Tensor::empty({M, C}, DType::f64);
      out.copy_from(base);
      ops::combine_rows(out, in, slots, weighted ? w : Tensor(), accumulate);
      double worst = 0;
      for (std::int64_t m = 0; m < M; ++m)
        for (std::int64_t c = 0; c < C; ++c) {
          double want = accumulate ? at(base, m * C + c) : 0.0;
          for (std::int64_t n = 0; n < N; ++n) want += S[m * N + n] * at(in, n * C + c);
          worst = std::max(worst, std::abs(at(out, m * C + c) - want));
        }
      CHECK(worst < 1e-12);
    }
}

TEST_CASE("combine_rows in f32 adds its terms in slot order", "[ops][rows]") {
  // The order is the contract (a combine must give the same bits on every device): fold it here.
  const std::int64_t M = 31, N = 12, C = 130, W = 5;
  const Tensor slots = random_slots(M, W, N, 9), in = random({N, C}, 5, 3, DType::f32),
               w = random({M, W}, 6, 1, DType::f32), base = random({M, C}, 8, 1, DType::f32);
  const std::int32_t* s = slots.data<std::int32_t>();
  for (bool accumulate : {false, true}) {
    Tensor out = Tensor::empty({M, C}, DType::f32);
    out.copy_from(base);
    ops::combine_rows(out, in, slots, w, accumulate);
    std::int64_t mismatches = 0;
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t c = 0; c < C; ++c) {
        float acc = accumulate ? base.data<float>()[m * C + c] : 0.f;
        bool first = !accumulate;
        for (std::int64_t j = m * W; j < (m + 1) * W; ++j) {
          if (s[j] < 0) continue;
          const float t = w.data<float>()[j] * in.data<float>()[s[j] * C + c];
          acc = first ? t : acc + t;
          first = false;
        }
        mismatches += std::memcmp(&acc, out.data<float>() + m * C + c, sizeof(float)) != 0;
      }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("row_dot takes each pair's dot product in double", "[ops][rows]") {
  const Tensor a = random({5, 300}, 11, 1, DType::f32), b = random({7, 300}, 12, 1, DType::f32);
  const std::vector<std::int32_t> ar = {0, 4, 4, 2}, br = {6, 0, 6, 2};
  Tensor out = Tensor::empty({4}, DType::f32), own = Tensor::empty({4}, DType::f32);
  ops::row_dot(out, a, ints(ar), b, ints(br));
  ops::row_dot(own, a, ints(ar), b.rows(0, 4));  // no b_rows: row j of b
  for (std::size_t j = 0; j < ar.size(); ++j) {
    double want = 0, want_own = 0;
    for (int c = 0; c < 300; ++c) {
      want += double(a.data<float>()[ar[j] * 300 + c]) * double(b.data<float>()[br[j] * 300 + c]);
      want_own += double(a.data<float>()[ar[j] * 300 + c]) * double(b.data<float>()[std::int64_t(j) * 300 + c]);
    }
    CHECK(out.data<float>()[j] == static_cast<float>(want));
    CHECK(own.data<float>()[j] == static_cast<float>(want_own));
  }
}

TEST_CASE("row ops reject bad index tensors at the boundary", "[ops][rows]") {
  const Tensor in = random({4, 3}, 1);
  Tensor out = Tensor::empty({2, 3}, DType::f64), dots = Tensor::empty({2}, DType::f64);
  CHECK_THROWS_WITH(ops::gather_rows(out, in, ints({0, 4})), Catch::Contains("src[1] = 4 outside [-1, 4)"));
  CHECK_THROWS_WITH(ops::gather_rows(out, in, ints({0, -2})), Catch::Contains("src[1] = -2"));
  CHECK_THROWS_WITH(ops::combine_rows(out, in, ints({0, 1, 2, 4}, {2, 2})), Catch::Contains("slots[3] = 4"));
  CHECK_THROWS_WITH(ops::combine_rows(out, in, ints({0, 1}, {2, 1}), random({2, 2}, 2)), Catch::Contains("weights"));
  CHECK_THROWS_WITH(ops::row_dot(dots, in, ints({0, -1}), in.rows(0, 2)),
                    Catch::Contains("a_rows[1] = -1 outside [0, 4)"));
  const Tensor f32_in = random({4, 3}, 1, 1, DType::f32);
  CHECK_THROWS_WITH(ops::gather_rows(out, f32_in, ints({0, 1})), Catch::Contains("out"));
}

TEST_CASE("copy_columns: a block of columns between row-aligned matrices, rows repeated", "[ops][rows]") {
  const Tensor in = random({3, 5}, 41);
  Tensor out = random({6, 4}, 42);
  const Tensor before = out.to(Device::cpu);
  ops::copy_columns(out, 1, in, 2, 3, /*rep=*/2);
  for (std::int64_t r = 0; r < 6; ++r)
    for (std::int64_t c = 0; c < 4; ++c)
      CHECK(at(out, r * 4 + c) == (c >= 1 ? at(in, (r / 2) * 5 + 2 + (c - 1)) : at(before, r * 4 + c)));
  Tensor f32 = Tensor::empty({6, 4}, DType::f32);
  CHECK_THROWS_AS(ops::copy_columns(f32, 0, in, 0, 3, 2), ShapeError);  // dtypes differ
  CHECK_THROWS_AS(ops::copy_columns(out, 2, in, 0, 3, 2), ShapeError);  // past out's columns
  CHECK_THROWS_AS(ops::copy_columns(out, 0, in, 0, 3, 3), ShapeError);  // 6 rows are not 3 x 3
}
