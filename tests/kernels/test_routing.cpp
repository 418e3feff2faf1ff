// The dispatch plan's ops (kernels/ops.h) against independent oracles: std::stable_sort for
// the counting sort, loops over the definition for capacity, pairs and slots, a closed form
// and central differences for the balance loss.
#include <catch2/catch.hpp>
#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("counting_sort places elements as a stable sort by bin does", "[ops][routing]") {
  std::mt19937_64 rng(3);
  for (const auto& [n, bins, divisor] : {std::tuple{1000, 7, 1}, {513, 3, 4}, {40, 1, 9}, {0, 2, 1}}) {
    INFO("n " << n << " bins " << bins << " divisor " << divisor);
    std::vector<std::int32_t> keys(static_cast<std::size_t>(n));
    for (auto& k : keys) k = rng() % 4 == 0 ? -1 : static_cast<std::int32_t>(rng() % std::uint64_t(bins * divisor));
    Tensor dest = Tensor::empty({n}, DType::i32), counts = Tensor::empty({bins}, DType::i32);
    ops::counting_sort(dest, counts, ints(keys), bins, divisor);
    std::vector<std::int32_t> order;  // the kept elements, stably sorted by bin
    for (std::int32_t i = 0; i < n; ++i)
      if (keys[std::size_t(i)] >= 0) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return keys[a] / divisor < keys[b] / divisor; });
    std::vector<std::int32_t> want(static_cast<std::size_t>(n), -1), want_counts(static_cast<std::size_t>(bins), 0);
    for (std::size_t p = 0; p < order.size(); ++p) want[std::size_t(order[p])] = static_cast<std::int32_t>(p);
    for (auto k : keys)
      if (k >= 0) ++want_counts[std::size_t(k / divisor)];
    CHECK(values(dest) == want);
    CHECK(values(counts) == want_counts);
  }
}

TEST_CASE("invert_positions inverts a placement, -1 where nothing lands", "[ops][routing]") {
  Tensor src = Tensor::empty({5}, DType::i32);
  ops::invert_positions(src, ints({3, -1, 0, 4, -1, 1}));
  CHECK(values(src) == std::vector<std::int32_t>{2, 5, -1, 0, 3});
  ops::invert_positions(src, ints({3, -1, 0, 4, -1, 1}), 2);  // i / 2
  CHECK(values(src) == std::vector<std::int32_t>{1, 2, -1, 0, 1});
  CHECK_THROWS_WITH(ops::invert_positions(src, ints({5})), Catch::Contains("dest[0] = 5 outside [-1, 5)"));
}

TEST_CASE("route_pairs marks the ranks each token reaches and the widest fan-out", "[ops][routing]") {
  // 3 tokens x top-3 over 8 experts on 4 ranks (2 each); -1: dropped.
  const Tensor kept = ints({0, 1, 7, -1, 3, 2, -1, -1, -1}, {3, 3});
  Tensor pairs = Tensor::empty({3, 4}, DType::i32), fan = Tensor::empty({1}, DType::i32);
  ops::route_pairs(pairs, fan, kept, 2);
  CHECK(values(pairs) == std::vector<std::int32_t>{0, -1, -1, 3, -1, 1, -1, -1, -1, -1, -1, -1});
  CHECK(values(fan) == std::vector<std::int32_t>{2});
}

TEST_CASE("dispatch_slots writes each kept assignment's local expert and index at its row and slot", "[ops][routing]") {
  // 2 tokens x top-2, 4 experts on 2 ranks. Rows: token 0 -> ranks 0 (row 0) and 1 (row 2),
  // token 1 -> rank 1 (row 3); row 1 is another token's that keeps nothing here.
  const Tensor kept = ints({1, 2, 3, -1}, {2, 2}), rows = ints({0, 2, -1, 3}, {2, 2});
  Tensor expert = Tensor::empty({4, 2}, DType::i32), assignment = Tensor::empty({8}, DType::i32);
  ops::dispatch_slots(expert, assignment, kept, rows, 2);
  CHECK(values(expert) == std::vector<std::int32_t>{1, -1, -1, -1, -1, 0, 1, -1});
  CHECK(values(assignment) == std::vector<std::int32_t>{0, -1, -1, -1, -1, 1, 2, -1});
}

TEST_CASE("balance loss: coef per sequence at uniform scores, and its gradient by central differences",
          "[ops][routing]") {
  const std::int64_t B = 3, T = 5, E = 6, K = 2, N = B * T;
  const double coef = 0.01;
  const Tensor index = random_ints({N, K}, 4, 0, int(E) - 1);
  Tensor f = Tensor::empty({B, E}, DType::f64), total = Tensor::zeros({1}, DType::f64);
  Tensor uniform = Tensor::empty({N, E}, DType::f32);
  std::fill_n(uniform.data<float>(), N * E, 0.25f);
  // P_e = 1/E whatever the choices, and sum_e f_e = E: the loss is coef per sequence.
  ops::balance_loss_forward(total, f, uniform, index, T, coef);
  CHECK(total.data<double>()[0] == Approx(coef * B).epsilon(1e-12));
  ops::balance_loss_forward(total, f, uniform, index, T, coef);  // it adds
  CHECK(total.data<double>()[0] == Approx(2 * coef * B).epsilon(1e-12));

  Tensor scores = random({N, E}, 5, 0.4, DType::f32);
  for (std::int64_t i = 0; i < N * E; ++i) scores.data<float>()[i] += 0.5f;  // positive, like sigmoid scores
  const double scale = 3.0;
  Tensor grad = Tensor::empty({N, E}, DType::f32);
  ops::balance_loss_forward(total, f, scores, index, T, coef);
  ops::balance_loss_backward(grad, f, scores, T, coef, scale);
  auto loss = [&] {
    Tensor t = Tensor::zeros({1}, DType::f64), fs = Tensor::empty({B, E}, DType::f64);
    ops::balance_loss_forward(t, fs, scores, index, T, coef);
    return scale * t.data<double>()[0];
  };
  double worst = 0, largest = 0;
  for (std::int64_t i = 0; i < N * E; ++i) {
    float& s = scores.data<float>()[i];
    const float s0 = s, h = 1e-2f;
    s = s0 + h;
    const double up = loss();
    s = s0 - h;
    const double down = loss();
    s = s0;
    const double fd = (up - down) / (double(s0 + h) - double(s0 - h));
    worst = std::max(worst, std::abs(fd - double(grad.data<float>()[i])));
    largest = std::max(largest, std::abs(fd));
  }
  CHECK(largest > 0);
  CHECK(worst < 1e-3 * largest);
}
