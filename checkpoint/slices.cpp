#include "checkpoint/slices.h"

#include <algorithm>

namespace moe::ckpt {
namespace {

std::int64_t inner_size(const Shape& s) {
  std::int64_t n = 1;
  for (std::size_t d = 1; d < s.size(); ++d) n *= s[d];
  return n;
}

// Blocks of [begin, end) inside the sub-array at `prefix` (fixed leading indices).
void blocks_of(const Shape& shape, std::size_t dim, Shape& prefix, std::int64_t begin, std::int64_t end,
               std::vector<Block>& out) {
  if (begin >= end) return;
  const Shape rest(shape.begin() + static_cast<std::ptrdiff_t>(dim), shape.end());
  const std::int64_t S = inner_size(rest);                  // elements per index of this dimension
  auto emit = [&](std::int64_t first, std::int64_t rows) {  // whole rows [first, first+rows)
    Block b{prefix, Shape(prefix.size(), 1)};
    b.offset.push_back(first), b.count.push_back(rows);
    for (std::size_t d = dim + 1; d < shape.size(); ++d) b.offset.push_back(0), b.count.push_back(shape[d]);
    out.push_back(std::move(b));
  };
  auto partial = [&](std::int64_t row, std::int64_t a, std::int64_t b) {  // inside one row
    prefix.push_back(row);
    blocks_of(shape, dim + 1, prefix, a, b, out);
    prefix.pop_back();
  };
  const std::int64_t r0 = begin / S, r1 = end / S, a = begin % S, b = end % S;
  if (r0 == r1) return partial(r0, a, b);
  std::int64_t first = r0;
  if (a != 0) partial(r0, a, S), ++first;
  if (r1 > first) emit(first, r1 - first);
  if (b != 0) partial(r1, 0, b);
}

}  // namespace

std::vector<Block> range_blocks(const Shape& shape, std::int64_t begin, std::int64_t end) {
  std::vector<Block> out;
  Shape prefix;
  if (shape.empty()) {
    if (begin < end) out.push_back({{}, {}});  // a scalar
    return out;
  }
  blocks_of(shape, 0, prefix, begin, end, out);
  return out;
}

std::vector<Block> slice_blocks(const Shape& dataset_shape, const Slice& s) {
  if (s.window.empty()) return range_blocks(dataset_shape, s.begin, s.end);
  auto blocks = range_blocks(s.window, s.begin, s.end);
  for (Block& b : blocks)
    for (std::size_t d = 0; d < b.offset.size(); ++d) b.offset[d] += s.offset[d];
  return blocks;
}

Slice as_flat(const Shape& dataset_shape, const Slice& s) {
  if (s.window.empty() || s.window.size() != dataset_shape.size()) return s;
  for (std::size_t d = 1; d < s.window.size(); ++d)
    if (s.window[d] != dataset_shape[d] || s.offset[d] != 0) return s;
  Slice flat = s;
  const std::int64_t first = s.offset[0] * inner_size(dataset_shape);
  flat.begin += first, flat.end += first;
  flat.window.clear(), flat.offset.clear();
  return flat;
}

std::vector<Run> slice_runs(const Shape& dataset_shape, const Slice& s, std::int64_t row_begin, std::int64_t row_end) {
  std::vector<Run> runs;
  const std::int64_t inner = inner_size(dataset_shape);
  auto add = [&](std::int64_t begin, std::int64_t count, std::int64_t mem) {
    if (count <= 0) return;
    if (!runs.empty() && runs.back().begin + runs.back().count == begin && runs.back().mem + runs.back().count == mem)
      runs.back().count += count;
    else runs.push_back({begin, count, mem});
  };
  if (s.window.empty()) {  // a flat range: its part inside the rows
    const std::int64_t a = std::max(s.begin, row_begin * inner), b = std::min(s.end, row_end * inner);
    add(a, b - a, a - s.begin);
    return runs;
  }
  std::int64_t mem = 0;  // blocks lie one after another in memory, each in row-major order
  for (const Block& b : slice_blocks(dataset_shape, s)) {
    const std::size_t nd = b.count.size();
    std::int64_t n = 1;
    for (auto c : b.count) n *= c;
    if (nd == 0 || n == 0) {  // a scalar
      add(0, n, mem);
      mem += n;
      continue;
    }
    // Each innermost row of the block: count[nd-1] elements, contiguous in both.
    const std::int64_t len = b.count[nd - 1];
    Shape at(nd, 0);  // index within the block, the last dimension left at 0
    for (std::int64_t done = 0; done < n; done += len) {
      if (b.offset[0] + at[0] >= row_begin && b.offset[0] + at[0] < row_end) {
        std::int64_t begin = 0;
        for (std::size_t d = 0; d < nd; ++d) begin = begin * dataset_shape[d] + b.offset[d] + at[d];
        add(begin, len, mem + done);
      }
      for (std::size_t d = nd - 1; d-- > 0;) {  // odometer over all but the last dimension
        if (++at[d] < b.count[d]) break;
        at[d] = 0;
      }
    }
    mem += n;
  }
  return runs;
}

}  // namespace moe::ckpt
