// Mixtures (data/mixture.h): each source's share of the sequences against its weight, over
// the whole run and over windows of steps (Webster's apportionment: within about one
// sequence); a restart at step k and data-parallel rank slices give the uninterrupted
// batches; one source gives a lone Loader's batches bit for bit; each source's sequences come
// from its own stream, through its own windows.
#include <catch2/catch.hpp>

#include <cmath>
#include <numeric>
#include <set>

#include "data/loader.h"
#include "data/mixture.h"

using namespace moe;
using namespace moe::data;

namespace {
// Source `id`'s stream of `n` tokens, id * 100000 + position: a row's ids show its source and
// its window.
TokenStream stream_of(std::int32_t id, std::int64_t n) {
  std::vector<std::int32_t> v(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = id * 100000 + static_cast<std::int32_t>(i);
  return TokenStream(std::move(v), "stream " + std::to_string(id));
}
std::vector<std::int32_t> rows(Mixture& m, std::int64_t step, std::int64_t first, std::int64_t count, std::int64_t T) {
  Batch b(count, T, false);
  m.fill(step, first, count, b);
  return {b.tokens.data<std::int32_t>(), b.tokens.data<std::int32_t>() + count * T};
}
}  // namespace

TEST_CASE("mixture: shares follow the weights over the run and over windows of steps", "[data][mixture]") {
  const std::int64_t T = 8, B = 8;
  const TokenStream a = stream_of(0, 4001), b = stream_of(1, 3001), c = stream_of(2, 2001);
  const auto weights =
      GENERATE(std::vector<double>{0.7, 0.2, 0.1}, std::vector<double>{1, 1, 1}, std::vector<double>{0.5, 0.49, 0.01});
  Mixture m({{&a, {}, weights[0], "a"}, {&b, {}, weights[1], "b"}, {&c, {}, weights[2], "c"}}, T, 7, B);
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  const std::int64_t steps = 1000;
  double worst = 0;
  for (std::int64_t s = 0; s <= steps; ++s) {
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < 3; ++i) {
      const std::int64_t k = m.drawn(i, s);
      sum += k;
      if (s > 0) REQUIRE(k >= m.drawn(i, s - 1));  // house-monotone: no step takes back a sequence
      worst = std::max(worst, std::abs(double(k) - double(s * B) * weights[i] / total));
    }
    REQUIRE(sum == s * B);
  }
  CHECK(worst < 1.0 + 1e-9);           // every source within one sequence of its quota, at every step
  for (std::size_t i = 0; i < 3; ++i)  // the bound: 1% over 1000 steps
    CHECK(std::abs(double(m.drawn(i, steps)) / double(steps * B) - weights[i] / total) < 0.01);
  // A window of steps [s0, s1): within two sequences of its share.
  for (std::int64_t s0 : {0, 13, 250, 777})
    for (std::int64_t len : {1, 7, 100}) {
      for (std::size_t i = 0; i < 3; ++i) {
        const double got = double(m.drawn(i, s0 + len) - m.drawn(i, s0)), want = double(len * B) * weights[i] / total;
        CHECK(std::abs(got - want) < 2.0 + 1e-9);
      }
    }
  // The rows of a step come from the sources in those numbers (token ids show the source).
  for (std::int64_t s : {0, 1, 500, 999}) {
    const auto r = rows(m, s, 0, B, T);
    for (std::size_t i = 0; i < 3; ++i) {
      std::int64_t n = 0;
      for (std::int64_t j = 0; j < B; ++j) n += r[std::size_t(j * T)] / 100000 == std::int32_t(i);
      CHECK(n == m.drawn(i, s + 1) - m.drawn(i, s));
    }
  }
}

TEST_CASE("mixture: a restart at step k and rank slices give the uninterrupted batches", "[data][mixture]") {
  const std::int64_t T = 16, B = 6;
  const TokenStream a = stream_of(0, 5000), b = stream_of(1, 900);
  const std::vector<Source> src = {{&a, {}, 3, "a"}, {&b, {}, 1, "b"}};
  Mixture run(src, T, 11, B);
  std::vector<std::vector<std::int32_t>> seen;
  for (std::int64_t s = 0; s < 60; ++s) seen.push_back(rows(run, s, 0, B, T));  // b repeats: epochs cross
  Mixture resumed(src, T, 11, B);
  for (std::int64_t s = 37; s < 60; ++s) CHECK(rows(resumed, s, 0, B, T) == seen[std::size_t(s)]);
  Mixture r0(src, T, 11, B), r1(src, T, 11, B);  // two ranks, 3 rows each
  for (std::int64_t s = 0; s < 60; ++s) {
    auto both = rows(r0, s, 0, 3, T);
    const auto second = rows(r1, s, 3, 3, T);
    both.insert(both.end(), second.begin(), second.end());
    CHECK(both == seen[std::size_t(s)]);
  }
  // A source goes through its own windows epoch by epoch: b's first 56 sequences (900 tokens:
  // 56 windows of 16) are 56 distinct windows.
  Mixture fresh(src, T, 11, B);
  std::set<std::int32_t> distinct;  // first tokens: the windows' starts
  std::int64_t from_b = 0;
  for (std::int64_t s = 0; from_b < 56; ++s)
    for (std::int64_t j = 0; j < B && from_b < 56; ++j) {
      Batch one(1, T, true);  // positions too: a source without document masking gives 0, 1, ...
      fresh.fill(s, j, 1, one);
      if (one.tokens.data<std::int32_t>()[0] < 100000) continue;
      ++from_b;
      distinct.insert(one.tokens.data<std::int32_t>()[0]);
      for (std::int64_t t = 0; t < T; ++t) REQUIRE(one.positions.data<std::int32_t>()[t] == t);
    }
  CHECK(fresh.windows(1) == 56);
  CHECK(distinct.size() == 56);
}

TEST_CASE("mixture: one source is a lone Loader, bit for bit", "[data][mixture]") {
  const std::int64_t T = 16, B = 4;
  const TokenStream a = stream_of(0, 3000);
  Loader lone(a, T, 5, B);
  Mixture one({{&a, {}, 1, "a"}}, T, 5, B);
  for (std::int64_t s = 0; s < 100; ++s) {
    Batch x(B, T, false), y(B, T, false);
    lone.fill(s, 0, B, x);
    one.fill(s, 0, B, y);
    REQUIRE(std::equal(x.tokens.data<std::int32_t>(), x.tokens.data<std::int32_t>() + B * T,
                       y.tokens.data<std::int32_t>()));
  }
}
