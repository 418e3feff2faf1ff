// A seeded permutation of [0, n) evaluated one index at a time, in constant memory: a
// four-round Feistel network on the smallest even number of bits that holds n, walking the
// cycle until it lands inside [0, n) (Black and Rogaway's cycle walking). `moe data prepare`
// holds out the documents whose place lands below the validation count: an exact count,
// drawn from the seed, with no list of the documents in memory and no order between ranks.
#pragma once
#include <cstdint>

#include <xxhash.h>

namespace moe::data {

class SeededPermutation {
 public:
  SeededPermutation(std::uint64_t n, std::uint64_t seed) : n_(n), seed_(seed) {
    while ((std::uint64_t{1} << (2 * half_)) < n_) ++half_;
    mask_ = (std::uint64_t{1} << half_) - 1;
  }
  // The place of x (< n) in the permutation.
  std::uint64_t operator()(std::uint64_t x) const {
    do x = feistel(x);
    while (x >= n_);
    return x;
  }

 private:
  std::uint64_t feistel(std::uint64_t x) const {
    std::uint64_t left = x >> half_, right = x & mask_;
    for (std::uint64_t round = 0; round < 4; ++round) {
      const std::uint64_t in[2] = {right, round};
      const std::uint64_t f = XXH64(in, sizeof in, seed_) & mask_;
      const std::uint64_t next = left ^ f;
      left = right, right = next;
    }
    return (left << half_) | right;
  }
  std::uint64_t n_, seed_, mask_ = 0;
  unsigned half_ = 1;
};

}  // namespace moe::data
