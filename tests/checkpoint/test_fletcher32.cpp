// The vectorised Fletcher32 against a line-by-line port of HDF5's H5_checksum_fletcher32
// (H5checksum.c, 1.10), on lengths around its 360-word blocks, odd lengths and extreme words.
#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <vector>

#include "checkpoint/fletcher32.h"

namespace {
std::uint32_t hdf5_reference(const void* _data, size_t _len) {
  const auto* data = static_cast<const std::uint8_t*>(_data);
  size_t len = _len / 2;
  std::uint32_t sum1 = 0, sum2 = 0;
  while (len) {
    size_t tlen = len > 360 ? 360 : len;
    len -= tlen;
    do {
      sum1 +=
          static_cast<std::uint32_t>((static_cast<std::uint16_t>(data[0]) << 8) | static_cast<std::uint16_t>(data[1]));
      data += 2;
      sum2 += sum1;
    } while (--tlen);
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  if (_len % 2) {
    sum1 += static_cast<std::uint32_t>(static_cast<std::uint16_t>(*data) << 8);
    sum2 += sum1;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}
}  // namespace

TEST_CASE("fletcher32: equals HDF5's checksum on every length around its blocks", "[checkpoint]") {
  std::mt19937 rng(7);
  std::vector<unsigned char> buf(4 * 360 * 2 + 9);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  // Both loops: AVX-512 (full blocks, where the CPU has it) and the portable one.
  for (std::size_t n : {0, 1, 2, 3, 127, 128, 129, 719, 720, 721, 722, 1440, 2000, 2881, 2888}) {
    CHECK(moe::ckpt::fletcher32(buf.data(), n) == hdf5_reference(buf.data(), n));
    CHECK(moe::ckpt::fletcher32_portable(buf.data(), n) == hdf5_reference(buf.data(), n));
  }
  std::vector<unsigned char> ones(1 << 16, 0xff), zeros(1 << 16, 0);  // the largest sums, and none
  CHECK(moe::ckpt::fletcher32(ones.data(), ones.size()) == hdf5_reference(ones.data(), ones.size()));
  CHECK(moe::ckpt::fletcher32(zeros.data(), zeros.size()) == hdf5_reference(zeros.data(), zeros.size()));
  CHECK(moe::ckpt::fletcher32_portable(ones.data(), ones.size()) == hdf5_reference(ones.data(), ones.size()));
  // Words at the extremes of the signed range the AVX-512 loop maps them to, and 8 MiB of
  // random bytes (a whole chunk).
  std::vector<unsigned char> edges(720 * 9);
  for (std::size_t i = 0; i < edges.size(); i += 2) edges[i] = (i / 2) % 3 == 0 ? 0x80 : (i / 2) % 3 == 1 ? 0x7f : 0xff;
  CHECK(moe::ckpt::fletcher32(edges.data(), edges.size()) == hdf5_reference(edges.data(), edges.size()));
  std::vector<unsigned char> big(8 << 20);
  for (auto& b : big) b = static_cast<unsigned char>(rng());
  CHECK(moe::ckpt::fletcher32(big.data(), big.size()) == hdf5_reference(big.data(), big.size()));
  const std::uint32_t before = moe::ckpt::fletcher32(buf.data(), 720);
  buf[100] ^= 1;  // a flipped bit changes it
  CHECK(moe::ckpt::fletcher32(buf.data(), 720) != before);
}

TEST_CASE("fletcher32: fed in pieces of whole blocks, the same checksum", "[checkpoint]") {
  std::mt19937 rng(11);
  std::vector<unsigned char> buf(7 * 720 + 301);
  for (auto& b : buf) b = static_cast<unsigned char>(rng());
  for (std::size_t piece : {720, 1440, 3600}) {
    moe::ckpt::Fletcher32 f;
    for (std::size_t at = 0; at < buf.size(); at += piece) f.update(buf.data() + at, std::min(piece, buf.size() - at));
    CHECK(f.value() == hdf5_reference(buf.data(), buf.size()));
  }
}
