#include "checkpoint/fletcher32.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace moe::ckpt {
namespace {
std::uint64_t fold(std::uint64_t x) { return (x & 0xffff) + (x >> 16); }

// One block of n <= 360 big-endian words: s = sum_i w_i and weighted = sum_i (n - i) w_i.
struct BlockSums {
  std::uint64_t s = 0, weighted = 0;
};

BlockSums block_portable(const unsigned char* p, std::size_t n) {
  BlockSums b;
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
    b.s += sw;
    b.weighted += std::uint64_t(n - o) * sw - jw;
  }
  return b;
}

#if defined(__x86_64__)
// A full block with AVX-512BW: 11 vectors of 32 words and one of 8. VPMADDWD multiplies
// signed 16-bit words, so each word is biased to w - 32768 first (xor 0x8000) and the bias
// added back: sum (w - 32768) c_i = sum w c_i - 32768 sum c_i. The weights n - i <= 360 fit
// 16 bits; a lane's 12 products stay below 2^29.
struct alignas(64) Weights {  // per word of a block: its weight n - i, and 1 (0 past the block)
  std::int16_t w[12 * 32], one[12 * 32];
  unsigned char swap[64];  // each word's two bytes exchanged: big-endian to the CPU's order
};
constexpr Weights make_weights() {
  Weights c{};
  for (int i = 0; i < 12 * 32; ++i) {
    c.w[i] = static_cast<std::int16_t>(i < 360 ? 360 - i : 0);
    c.one[i] = static_cast<std::int16_t>(i < 360);
  }
  for (int i = 0; i < 64; ++i) c.swap[i] = static_cast<unsigned char>((i % 16) ^ 1);
  return c;
}
constexpr Weights kWeights = make_weights();

__attribute__((target("avx512f,avx512bw"))) BlockSums block360_avx512(const unsigned char* p) {
  const __m512i swap = _mm512_load_si512(kWeights.swap);
  const __m512i bias = _mm512_set1_epi16(static_cast<std::int16_t>(0x8000));
  __m512i s = _mm512_setzero_si512(), w = _mm512_setzero_si512();
  for (int k = 0; k < 12; ++k) {
    const __m512i raw = k < 11 ? _mm512_loadu_si512(p + 64 * k) : _mm512_maskz_loadu_epi8(0xffff, p + 64 * k);
    const __m512i x = _mm512_xor_si512(_mm512_shuffle_epi8(raw, swap), bias);
    s = _mm512_add_epi32(s, _mm512_madd_epi16(x, _mm512_load_si512(kWeights.one + 32 * k)));
    w = _mm512_add_epi32(w, _mm512_madd_epi16(x, _mm512_load_si512(kWeights.w + 32 * k)));
  }
  alignas(64) std::int32_t ls[16], lw[16];  // lanes summed in 64 bits
  _mm512_store_si512(ls, s);
  _mm512_store_si512(lw, w);
  long long ts = 360LL * 32768, tw = 360LL * 361 / 2 * 32768;
  for (int i = 0; i < 16; ++i) ts += ls[i], tw += lw[i];
  return {static_cast<std::uint64_t>(ts), static_cast<std::uint64_t>(tw)};
}
const bool kAvx512 = __builtin_cpu_supports("avx512bw");
#else
const bool kAvx512 = false;
#endif

// As HDF5: per block of up to 360 big-endian words, sum1 += w and sum2 += sum1 after each
// word, then one fold of each. Within a block that is sum1 += sum_i w_i and
// sum2 += n*sum1 + sum_i (n-i) w_i: two independent reductions, which vectorise.
void update(const unsigned char* p, std::size_t bytes, std::uint64_t& sum1, std::uint64_t& sum2, bool vector) {
  std::size_t words = bytes / 2;
  while (words) {
    const std::size_t n = words > 360 ? 360 : words;
    BlockSums b;
#if defined(__x86_64__)
    if (vector && n == 360) b = block360_avx512(p);
    else
#endif
      b = block_portable(p, n);
    sum2 += n * sum1 + b.weighted;
    sum1 += b.s;
    sum1 = fold(sum1), sum2 = fold(sum2);
    p += 2 * n, words -= n;
  }
  if (bytes % 2) {
    sum1 += std::uint64_t(*p) << 8;
    sum2 += sum1;
    sum1 = fold(sum1), sum2 = fold(sum2);
  }
}
}  // namespace

void Fletcher32::update(const void* data, std::size_t bytes) {
  ckpt::update(static_cast<const unsigned char*>(data), bytes, sum1_, sum2_, kAvx512);
}

std::uint32_t Fletcher32::value() const {
  const std::uint64_t sum1 = fold(sum1_), sum2 = fold(sum2_);  // one final fold, as HDF5
  return static_cast<std::uint32_t>((sum2 << 16) | sum1);
}

std::uint32_t fletcher32(const void* data, std::size_t bytes) {
  Fletcher32 f;
  f.update(data, bytes);
  return f.value();
}

std::uint32_t fletcher32_portable(const void* data, std::size_t bytes) {
  std::uint64_t sum1 = 0, sum2 = 0;
  ckpt::update(static_cast<const unsigned char*>(data), bytes, sum1, sum2, false);
  return static_cast<std::uint32_t>((fold(sum2) << 16) | fold(sum1));
}

std::uint32_t fletcher32_stored(const unsigned char* t) {
  return std::uint32_t(t[0]) | std::uint32_t(t[1]) << 8 | std::uint32_t(t[2]) << 16 | std::uint32_t(t[3]) << 24;
}

std::array<unsigned char, 4> fletcher32_trailer(const void* data, std::size_t bytes) {
  const std::uint32_t sum = fletcher32(data, bytes);
  return {static_cast<unsigned char>(sum), static_cast<unsigned char>(sum >> 8), static_cast<unsigned char>(sum >> 16),
          static_cast<unsigned char>(sum >> 24)};
}

bool fletcher32_matches(const void* stored, std::size_t bytes) {
  return fletcher32(stored, bytes) == fletcher32_stored(static_cast<const unsigned char*>(stored) + bytes);
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
