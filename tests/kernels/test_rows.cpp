#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// A random CSR list over M output rows reading N input rows: some rows empty, some long.
struct Lists {
  std::vector<std::int32_t> offsets{0}, src, widx;
};
Lists random_lists(std::int64_t M, std::int64_t N, std::int64_t W, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Lists l;
  for (std::int64_t m = 0; m < M; ++m) {
    const auto n = static_cast<int>(rng() % 5);  // 0..4 entries
    for (int j = 0; j < n; ++j) {
      l.src.push_back(static_cast<std::int32_t>(rng() % std::uint64_t(N)));
      l.widx.push_back(static_cast<std::int32_t>(rng() % std::uint64_t(W)));
    }
    l.offsets.push_back(static_cast<std::int32_t>(l.src.size()));
  }
  return l;
}
ops::RowSums sums(const Lists& l) { return {l.offsets, l.src, l.widx}; }
}  // namespace

TEST_CASE("gather_rows copies whole rows of any dtype", "[ops][rows]") {
  const Tensor x = random({9, 37}, 1, 1, DType::f32);
  Tensor b = Tensor::empty({9, 37}, DType::bf16), q = Tensor::empty({9, 37}, DType::e4m3), s = Tensor::empty({9, 1}, DType::f32);
  ops::convert(b, x);
  ops::quantize_1x128(q, s, x);
  const std::vector<std::int32_t> src = {8, 0, 0, 3, 8, 1};
  for (const Tensor* in : std::initializer_list<const Tensor*>{&x, &b, &q}) {
    Tensor out = Tensor::empty({6, 37}, in->dtype());
    ops::gather_rows(out, *in, src);
    const std::size_t row = in->nbytes() / 9;
    for (std::size_t r = 0; r < src.size(); ++r)
      CHECK(std::memcmp(static_cast<const char*>(out.raw()) + r * row, static_cast<const char*>(in->raw()) + std::size_t(src[r]) * row,
                        row) == 0);
  }
  Tensor none = Tensor::empty({0, 37}, DType::f32);
  ops::gather_rows(none, x, {});
}

TEST_CASE("gather_sum equals the dense product of its selection matrix with the input", "[ops][rows]") {
  // The oracle: S (M,N) with S[m, src_j] += w_j for each entry of row m, then S @ in in f64.
  const std::int64_t M = 23, N = 17, C = 11, W = 40;
  const Lists l = random_lists(M, N, W, 7);
  const Tensor in = random({N, C}, 2), w = random({W}, 3), base = random({M, C}, 4);
  for (bool weighted : {false, true})
    for (bool accumulate : {false, true}) {
      INFO((weighted ? "weighted" : "plain") << (accumulate ? " accumulate" : ""));
      std::vector<double> S(std::size_t(M * N), 0.0);
      for (std::int64_t m = 0; m < M; ++m)
        for (auto j = l.offsets[m]; j < l.offsets[m + 1]; ++j) S[m * N + l.src[j]] += weighted ? at(w, l.widx[j]) : 1.0;
      Tensor out = Tensor::empty({M, C}, DType::f64);
      out.copy_from(base);
      ops::gather_sum(out, in, sums(l), weighted ? w : Tensor(), accumulate);
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

TEST_CASE("gather_sum in f32 adds its terms in list order", "[ops][rows]") {
  // The order is the contract (a combine must give the same bits on every device): fold it here.
  const std::int64_t M = 31, N = 12, C = 130, W = 9;
  const Lists l = random_lists(M, N, W, 9);
  const Tensor in = random({N, C}, 5, 3, DType::f32), w = random({W}, 6, 1, DType::f32), base = random({M, C}, 8, 1, DType::f32);
  for (bool accumulate : {false, true}) {
    Tensor out = Tensor::empty({M, C}, DType::f32);
    out.copy_from(base);
    ops::gather_sum(out, in, sums(l), w, accumulate);
    std::int64_t mismatches = 0;
    for (std::int64_t m = 0; m < M; ++m)
      for (std::int64_t c = 0; c < C; ++c) {
        float acc = accumulate ? base.data<float>()[m * C + c] : 0.f;
        for (auto j = l.offsets[m]; j < l.offsets[m + 1]; ++j) {
          const float t = w.data<float>()[l.widx[j]] * in.data<float>()[l.src[j] * C + c];
          acc = (j == l.offsets[m] && !accumulate) ? t : acc + t;
        }
        mismatches += std::memcmp(&acc, out.data<float>() + m * C + c, sizeof(float)) != 0;
      }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("row_dot takes each pair's dot product in double", "[ops][rows]") {
  const Tensor a = random({5, 300}, 11, 1, DType::f32), b = random({7, 300}, 12, 1, DType::f32);
  const std::vector<std::int32_t> ar = {0, 4, 4, 2}, br = {6, 0, 6, 2};
  Tensor out = Tensor::empty({4}, DType::f32);
  ops::row_dot(out, a, ar, b, br);
  for (std::size_t j = 0; j < ar.size(); ++j) {
    double want = 0;
    for (int c = 0; c < 300; ++c) want += double(a.data<float>()[ar[j] * 300 + c]) * double(b.data<float>()[br[j] * 300 + c]);
    CHECK(out.data<float>()[j] == static_cast<float>(want));
  }
}

TEST_CASE("row ops reject bad lists at the boundary", "[ops][rows]") {
  const Tensor in = random({4, 3}, 1);
  Tensor out = Tensor::empty({2, 3}, DType::f64);
  const std::vector<std::int32_t> bad_src = {0, 4}, off = {0, 1, 2}, down = {0, 2, 1}, src = {1, 2};
  CHECK_THROWS_WITH(ops::gather_rows(out, in, bad_src), Catch::Contains("src[1] = 4 outside [0, 4)"));
  CHECK_THROWS_WITH(ops::gather_sum(out, in, {off, bad_src, {}}), Catch::Contains("src[1] = 4"));
  CHECK_THROWS_WITH(ops::gather_sum(out, in, {down, src, {}}), Catch::Contains("offsets decrease at output row 1"));
  CHECK_THROWS_WITH(ops::gather_sum(out, in, {off, src, {}}, random({3}, 2)), Catch::Contains("widx has 0 entries"));
}
