// What one rank reads or writes of a checkpoint: slices of full logical tensors.
// A parallel axis only has to describe its slices: expert parallelism names the experts a
// rank holds, ZeRO-1 the flat element range of its optimizer shard; the file never knows
// the layout, so any layout loads any checkpoint.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe::ckpt {

// One dataset of the file: its name and full shape (f32).
struct Dataset {
  std::string name;  // e.g. "weights/model.layers.1.mlp.experts.3.up_proj.weight"
  Shape shape;
};

// Elements [begin, end) of a dataset in row-major order, held contiguously at `data` (host
// memory owned by the caller: read into or written from). With a window (a tensor-parallel
// shard), [begin, end) count in row-major order of the block of shape `window` at `offset`
// in the dataset instead.
struct Slice {
  std::string dataset;
  std::int64_t begin = 0, end = 0;
  float* data = nullptr;
  Shape window, offset;  // empty: the whole dataset
};

// A rectangular block of an N-D array: offset and count per dimension.
struct Block {
  Shape offset, count;
};

// The blocks whose union, in row-major order, is the flat range [begin, end) of an array of
// `shape`: at most 2 per dimension plus one (a partial leading row, whole rows, a partial
// trailing row, recursively).
std::vector<Block> range_blocks(const Shape& shape, std::int64_t begin, std::int64_t end);
// The blocks of a slice in dataset coordinates (its window's blocks moved to its offset).
std::vector<Block> slice_blocks(const Shape& dataset_shape, const Slice& s);

// The same elements as a flat range where the slice's window spans whole trailing
// dimensions (a tensor-parallel shard of whole rows is one stretch of its dataset); else `s`.
Slice as_flat(const Shape& dataset_shape, const Slice& s);

// A stretch of a slice contiguous both in its dataset (row-major) and in the slice's memory:
// `count` elements from dataset element `begin`, held from element `mem` of Slice::data.
struct Run {
  std::int64_t begin, count, mem;
};
// The runs of a slice within leading rows [row_begin, row_end) of its dataset (a chunk), in
// increasing dataset order, adjacent runs merged: one for a flat range, one per row of the
// window for a tensor-parallel window that cuts the trailing dimension.
std::vector<Run> slice_runs(const Shape& dataset_shape, const Slice& s, std::int64_t row_begin, std::int64_t row_end);

}  // namespace moe::ckpt
