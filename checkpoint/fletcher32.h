// HDF5's Fletcher32 checksum (H5_checksum_fletcher32), bit for bit, a block of 360 16-bit
// words at a time with 64-bit sums the compiler vectorises: several times the speed of
// HDF5 1.10's word-at-a-time loop. Checkpoint loads verify every raw chunk with it
// (checkpoint.cpp); HDF5 computes the same sums when it writes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace moe::ckpt {

std::uint32_t fletcher32(const void* data, std::size_t bytes);

}  // namespace moe::ckpt
