// The geometry of checkpoint slices against element-by-element oracles: the blocks of a flat
// range cover exactly its elements, and the runs of a slice map every element of the slice's
// memory to its place in the dataset, once.
#include <catch2/catch.hpp>

#include <map>

#include "checkpoint/slices.h"

using moe::Shape;
using namespace moe::ckpt;

namespace {
std::int64_t numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto e : s) n *= e;
  return n;
}
// Row-major flat index <-> coordinates.
Shape coords(const Shape& shape, std::int64_t i) {
  Shape c(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) c[d] = i % shape[d], i /= shape[d];
  return c;
}
std::int64_t flat(const Shape& shape, const Shape& c) {
  std::int64_t i = 0;
  for (std::size_t d = 0; d < shape.size(); ++d) i = i * shape[d] + c[d];
  return i;
}
// Element j of the slice's memory: its flat index in the dataset.
std::int64_t place(const Shape& dataset, const Slice& s, std::int64_t j) {
  if (s.window.empty()) return s.begin + j;
  Shape c = coords(s.window, s.begin + j);
  for (std::size_t d = 0; d < c.size(); ++d) c[d] += s.offset[d];
  return flat(dataset, c);
}
}  // namespace

TEST_CASE("slices: the blocks of a flat range hold exactly its elements", "[checkpoint]") {
  for (const Shape& shape : {Shape{7}, Shape{5, 6}, Shape{3, 4, 5}}) {
    const std::int64_t n = numel(shape);
    for (std::int64_t b = 0; b < n; b += 3)
      for (std::int64_t e = b; e <= n; e += 5) {
        std::map<std::int64_t, int> seen;
        for (const Block& blk : range_blocks(shape, b, e))
          for (std::int64_t k = 0; k < numel(blk.count); ++k) {
            Shape c = coords(blk.count, k);
            for (std::size_t d = 0; d < c.size(); ++d) c[d] += blk.offset[d];
            ++seen[flat(shape, c)];
          }
        REQUIRE(static_cast<std::int64_t>(seen.size()) == e - b);
        for (const auto& [i, times] : seen) CHECK((i >= b && i < e && times == 1));
      }
  }
}

TEST_CASE("slices: runs map a slice's memory to its dataset, row range by row range", "[checkpoint]") {
  struct Case {
    Shape dataset;
    Slice slice;
  };
  const std::vector<Case> cases = {
      {{10, 6}, {"flat", 7, 45, nullptr, {}, {}}},
      {{10, 6}, {"columns", 0, 30, nullptr, {10, 3}, {0, 3}}},         // a column-parallel half
      {{10, 6}, {"rows", 0, 24, nullptr, {4, 6}, {6, 0}}},             // a row-parallel part
      {{10, 6}, {"partial window", 4, 17, nullptr, {10, 2}, {0, 2}}},  // a ZeRO range of a window
      {{4, 3, 5}, {"3-D", 2, 20, nullptr, {2, 3, 4}, {1, 0, 1}}},
  };
  for (const auto& [dataset, s] : cases) {
    INFO(s.dataset);
    for (const auto& [r0, r1] : {std::pair<std::int64_t, std::int64_t>{0, dataset[0]}, {1, 3}, {3, 4}}) {
      // The oracle: every memory element whose dataset row lies in [r0, r1).
      const std::int64_t inner = numel(dataset) / dataset[0];
      std::map<std::int64_t, std::int64_t> want;  // memory index -> dataset index
      for (std::int64_t j = 0; j < s.end - s.begin; ++j)
        if (const auto i = place(dataset, s, j); i / inner >= r0 && i / inner < r1) want[j] = i;
      std::map<std::int64_t, std::int64_t> got;
      std::int64_t last_end = -1;
      for (const Run& r : slice_runs(dataset, s, r0, r1)) {
        CHECK(r.begin > last_end);  // increasing, merged where adjacent in both
        last_end = r.begin + r.count;
        for (std::int64_t k = 0; k < r.count; ++k) CHECK(got.emplace(r.mem + k, r.begin + k).second);
      }
      CHECK(got == want);
    }
  }
}

TEST_CASE("slices: a window of whole rows is the flat range it covers", "[checkpoint]") {
  const Shape dataset{10, 6};
  const Slice rows{"d", 2, 20, nullptr, {4, 6}, {6, 0}};
  const Slice flat = as_flat(dataset, rows);
  CHECK(flat.window.empty());
  CHECK(flat.begin == 38);
  CHECK(flat.end == 56);
  for (std::int64_t j = 0; j < 18; ++j) CHECK(place(dataset, flat, j) == place(dataset, rows, j));
  const Slice columns{"d", 0, 30, nullptr, {10, 3}, {0, 3}};
  CHECK(as_flat(dataset, columns).window == columns.window);
}
