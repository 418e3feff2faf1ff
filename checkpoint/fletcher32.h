// HDF5's Fletcher32 checksum (H5_checksum_fletcher32), bit for bit, a block of 360 16-bit
// words at a time: with AVX-512BW where the CPU has it (about 10x HDF5 1.10's word-at-a-time
// loop), else with 64-bit sums the compiler vectorises. Checkpoint loads verify every raw chunk with it
// (checkpoint.cpp); HDF5 computes the same sums when it writes.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

namespace moe::ckpt {

// The checksum of bytes fed in pieces (a chunk verified as it is read, while each piece is
// still in cache). Every piece but the last must be a whole number of HDF5's blocks
// (kBlock bytes): the sums fold after each block, as HDF5's do.
class Fletcher32 {
 public:
  static constexpr std::size_t kBlock = 720;  // 360 words
  void update(const void* data, std::size_t bytes);
  std::uint32_t value() const;

 private:
  std::uint64_t sum1_ = 0, sum2_ = 0;
};

std::uint32_t fletcher32(const void* data, std::size_t bytes);
// The same without AVX-512 (what a CPU without it computes; tests hold the two equal).
std::uint32_t fletcher32_portable(const void* data, std::size_t bytes);

// A chunk as HDF5's Fletcher32 filter stores it ends in the checksum of its payload, least
// significant byte first: the 4 bytes to append to `bytes` of data, and the check of a
// stored chunk (`bytes` of payload followed by its 4 checksum bytes).
std::array<unsigned char, 4> fletcher32_trailer(const void* data, std::size_t bytes);
bool fletcher32_matches(const void* stored, std::size_t bytes);
// The checksum stored in a chunk's 4 trailing bytes.
std::uint32_t fletcher32_stored(const unsigned char* trailer);

}  // namespace moe::ckpt
