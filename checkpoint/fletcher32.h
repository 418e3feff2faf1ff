// HDF5's Fletcher32 checksum (H5_checksum_fletcher32), bit for bit, a block of 360 16-bit
// words at a time with 64-bit sums the compiler vectorises: several times the speed of
// HDF5 1.10's word-at-a-time loop. Checkpoint loads verify every raw chunk with it
// (checkpoint.cpp); HDF5 computes the same sums when it writes.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace moe::ckpt {

std::uint32_t fletcher32(const void* data, std::size_t bytes);

// A chunk as HDF5's Fletcher32 filter stores it ends in the checksum of its payload, least
// significant byte first: the 4 bytes to append to `bytes` of data, and the check of a
// stored chunk (`bytes` of payload followed by its 4 checksum bytes).
std::array<unsigned char, 4> fletcher32_trailer(const void* data, std::size_t bytes);
bool fletcher32_matches(const void* stored, std::size_t bytes);

}  // namespace moe::ckpt
