// The scale layouts cuBLASLt's block-scaled FP8 GEMM reads (TransformerEngine's GEMM_READY
// format, Float8BlockQuantizer::get_scale_shape), from the (rows, T) row-major scales that
// quantize_1x128 / quantize_128x128 write (T = ceil(K/128) tiles along K):
//   VEC128     (1x128 tiles of an (R, K) operand): (T, pad4(R)), R fastest ("outer-dim
//              major"), each K-tile's column of R scales padded to a multiple of 4;
//   BLK128x128 (128x128 blocks of an (R, K) operand): (ceil(R/128), pad4(T)), K-blocks
//              fastest, each row of blocks padded to a multiple of 4.
// Without the padding cuBLASLt reads the next tile's scales at a wrong offset whenever R (or
// T) is not a multiple of 4: silently wrong results. Padding entries hold 1 (a correct kernel
// never reads them; 1 keeps a stray read finite). Host code: the CUDA packer
// (kernels/cuda/gemm.cu) does the same, and tests/kernels/test_fp8.cpp holds this one to an
// element-by-element reading of the layout.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe::fp8_layout {

constexpr std::int64_t pad4(std::int64_t n) { return (n + 3) / 4 * 4; }

// A packed scale buffer: `outer` runs of `ld` floats.
struct Packed {
  std::int64_t outer, ld;
  constexpr std::int64_t size() const { return outer * ld; }
};
constexpr Packed vec128(std::int64_t rows, std::int64_t tiles) { return {tiles, pad4(rows)}; }
constexpr Packed blk128(std::int64_t row_blocks, std::int64_t tiles) { return {row_blocks, pad4(tiles)}; }

// Element (o, i) of the packed buffer: where it comes from in src (rows, tiles), or -1 for
// padding. vec: o a tile, i a row; blk: o a row block, i a tile.
MOE_HOST_DEVICE constexpr std::int64_t source(bool vec, std::int64_t o, std::int64_t i, std::int64_t rows,
                                              std::int64_t tiles) {
  if (vec) return i < rows ? i * tiles + o : -1;
  return i < tiles ? o * tiles + i : -1;
}

// dst (packed) from src (rows, tiles) row-major; rows are row blocks for blk.
inline void pack(float* dst, const float* src, bool vec, std::int64_t rows, std::int64_t tiles) {
  const Packed p = vec ? vec128(rows, tiles) : blk128(rows, tiles);
  for (std::int64_t o = 0; o < p.outer; ++o)
    for (std::int64_t i = 0; i < p.ld; ++i) {
      const std::int64_t s = source(vec, o, i, rows, tiles);
      dst[o * p.ld + i] = s < 0 ? 1.f : src[s];
    }
}

}  // namespace moe::fp8_layout
