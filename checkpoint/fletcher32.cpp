#include "checkpoint/fletcher32.h"

namespace moe::ckpt {
namespace {
std::uint64_t fold(std::uint64_t x) { return (x & 0xffff) + (x >> 16); }
}  // namespace

std::uint32_t fletcher32(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t words = bytes / 2;
  std::uint64_t sum1 = 0, sum2 = 0;
  // As HDF5: per block of up to 360 big-endian words, sum1 += w and sum2 += sum1 after each
  // word, then one fold of each. Within a block that is sum1 += sum_i w_i and
  // sum2 += n*sum1 + sum_i (n-i) w_i: two independent reductions, which vectorise.
  while (words) {
    const std::size_t n = words > 360 ? 360 : words;
    std::uint64_t s = 0, weighted = 0;
    // 32-bit lanes (AVX2 has no 64-bit multiply): sub-blocks of 64 words keep the sums of
    // j * w below 2^28; sub-block o contributes (n - o) * sum(w) - sum(j * w).
    for (std::size_t o = 0; o < n; o += 64) {
      const std::size_t m = n - o < 64 ? n - o : 64;
      const unsigned char* q = p + 2 * o;
      std::uint32_t sw = 0, jw = 0;
      for (std::size_t j = 0; j < m; ++j) {
        const std::uint32_t w = std::uint32_t(q[2 * j]) << 8 | q[2 * j + 1];
        sw += w;
        jw += static_cast<std::uint32_t>(j) * w;
      }
      s += sw;
      weighted += std::uint64_t(n - o) * sw - jw;
    }
    sum2 += n * sum1 + weighted;
    sum1 += s;
    sum1 = fold(sum1), sum2 = fold(sum2);
    p += 2 * n, words -= n;
  }
  if (bytes % 2) {
    sum1 += std::uint64_t(*p) << 8;
    sum2 += sum1;
    sum1 = fold(sum1), sum2 = fold(sum2);
  }
  sum1 = fold(sum1), sum2 = fold(sum2);
  return static_cast<std::uint32_t>((sum2 << 16) | sum1);
}

std::array<unsigned char, 4> fletcher32_trailer(const void* data, std::size_t bytes) {
  const std::uint32_t sum = fletcher32(data, bytes);
  return {static_cast<unsigned char>(sum), static_cast<unsigned char>(sum >> 8), static_cast<unsigned char>(sum >> 16),
          static_cast<unsigned char>(sum >> 24)};
}

bool fletcher32_matches(const void* stored, std::size_t bytes) {
  const auto* t = static_cast<const unsigned char*>(stored) + bytes;
  return fletcher32_trailer(stored, bytes) == std::array<unsigned char, 4>{t[0], t[1], t[2], t[3]};
}

}  // namespace moe::ckpt

// HDF5 computes the same checksum in its Fletcher32 filter word by word (~1.5 GB/s): on every
// rank, for each dataset's fill chunk when parallel HDF5 creates it, and for every chunk it
// filters itself (tensor-parallel windows, `moe ckpt inspect`). libhdf5 calls it through its
// PLT, so this definition in the executable takes its place (a library linked with
// -Bsymbolic would keep its own: slower, equally correct). Bit-exact by test_fletcher32.
extern "C" std::uint32_t H5_checksum_fletcher32(const void* data, std::size_t len) {
  return moe::ckpt::fletcher32(data, len);
}
