// Fuzzes the two readers of files a run trusts, built with AddressSanitizer and UBSan (this
// target compiles their sources itself): the token shard reader and the checkpoint reader
// are fed seeded mutations of valid files (truncations, flipped bytes, wrong magic, huge and
// inconsistent header counts, random bytes). Each input must either read cleanly or throw
// moe::Error; anything else (another exception, a sanitizer report, a crash) fails.
// Usage: fuzz_readers [CASES per reader, default 400]
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/shard.h"
#include "kernels/error.h"

namespace fs = std::filesystem;
using Bytes = std::vector<char>;

namespace {

Bytes slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
void spill(const std::string& path, const Bytes& b) {
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(b.data(), static_cast<std::streamsize>(b.size()));
}

// One seeded mutation of `good`; `counts` are byte offsets of u64 header fields to abuse.
Bytes mutate(const Bytes& good, std::mt19937_64& rng, const std::vector<std::size_t>& counts, std::string& what) {
  Bytes b = good;
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % std::max<std::size_t>(n, 1)); };
  switch (rng() % 6) {
    case 0:
      b.resize(pick(good.size()));
      what = fmt::format("truncated to {} bytes", b.size());
      break;
    case 1: {
      const int n = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < n; ++i) b[pick(b.size())] ^= static_cast<char>(1 + rng() % 255);
      what = fmt::format("{} bytes flipped", n);
      break;
    }
    case 2:
      std::memcpy(b.data(), "NOTMAGIC", std::min<std::size_t>(8, b.size()));
      what = "wrong magic";
      break;
    case 3: {
      if (counts.empty()) return mutate(good, rng, counts, what);
      const std::size_t at = counts[pick(counts.size())];
      const std::uint64_t values[] = {~0ull, 1ull << 63, 1ull << 62, (1ull << 63) + 1, 1ull << 40, 0};
      const std::uint64_t v = values[pick(6)];
      std::memcpy(b.data() + at, &v, 8);
      what = fmt::format("u64 at byte {} set to {}", at, v);
      break;
    }
    case 4: {
      b.resize(pick(4 * good.size()));
      for (char& c : b) c = static_cast<char>(rng());
      what = fmt::format("{} random bytes", b.size());
      break;
    }
    default: {
      const std::size_t at = pick(b.size()), n = pick(std::min<std::size_t>(4096, b.size() - at));
      for (std::size_t i = 0; i < n; ++i) b[at + i] = 0;
      what = fmt::format("{} bytes zeroed at {}", n, at);
      break;
    }
  }
  return b;
}

int failures = 0, clean = 0, accepted = 0;

template <class F>
void expect_clean(const std::string& reader, const std::string& what, F&& f) {
  try {
    f();
    ++accepted;
  } catch (const moe::Error&) {
    ++clean;
  } catch (const std::exception& e) {
    ++failures;
    std::printf("FAIL: %s, %s: %s instead of a moe::Error\n", reader.c_str(), what.c_str(), e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  const int cases = argc > 1 ? std::atoi(argv[1]) : 400;
  const std::string dir = "fuzz_readers_scratch";
  fs::create_directories(dir);
  std::mt19937_64 rng(20261127);

  // Token shards: a valid one of 1000 ids below 300, then its mutations.
  std::vector<std::uint32_t> tokens(1000);
  for (auto& t : tokens) t = static_cast<std::uint32_t>(rng() % 300);
  moe::data::write_shard(dir + "/good.bin", tokens, 300);
  const Bytes shard = slurp(dir + "/good.bin");
  for (int i = 0; i < cases; ++i) {
    std::string what;
    spill(dir + "/bad.bin", mutate(shard, rng, {16, 24}, what));  // count and vocabulary fields
    expect_clean("shard", what, [&] {
      const moe::data::Shard s(dir + "/bad.bin", 300);
      std::uint64_t sum = 0;
      for (std::uint64_t k = 0; k < s.size(); ++k) sum += s[k];
      if (sum == ~0ull) std::printf("unreachable\n");  // keeps the reads
    });
  }
  const int shard_cases = clean + accepted;

  // Checkpoints: a valid one with two datasets, then its mutations through every reader.
  std::vector<float> a(4096), b(300);
  for (auto& x : a) x = static_cast<float>(rng() % 1000) / 7.f;
  for (auto& x : b) x = static_cast<float>(rng() % 1000) / 3.f;
  const std::vector<moe::ckpt::Dataset> datasets = {{"weights/a", {64, 64}}, {"buffers/b", {300}}};
  moe::ckpt::Meta meta;
  meta.attrs = {{"step", std::int64_t{7}}, {"config", std::string("model: {}\n")}};
  moe::SelfCommunicator self;
  moe::ckpt::write(dir + "/good.h5", self, meta, datasets,
                   {{"weights/a", 0, 4096, a.data(), {}, {}}, {"buffers/b", 0, 300, b.data(), {}, {}}});
  const Bytes ckpt = slurp(dir + "/good.h5");
  for (int i = 0; i < cases; ++i) {
    std::string what;
    spill(dir + "/bad.h5", mutate(ckpt, rng, {}, what));
    const std::string path = dir + "/bad.h5";
    expect_clean("checkpoint meta", what, [&] { moe::ckpt::read_meta(path); });
    expect_clean("checkpoint inspect", what, [&] { moe::ckpt::inspect(path); });
    expect_clean("checkpoint read_group", what, [&] { moe::ckpt::read_group(path, "weights"); });
    std::vector<float> ra(4096), rb(300);
    expect_clean("checkpoint read", what, [&] {
      moe::ckpt::read(path, datasets,
                      {{"weights/a", 0, 4096, ra.data(), {}, {}}, {"buffers/b", 0, 300, rb.data(), {}, {}}});
    });
  }
  std::printf(
      "fuzz_readers: %d shard and %d checkpoint inputs: %d read cleanly, %d refused with moe::Error, %d failures\n",
      shard_cases, cases, accepted, clean, failures);
  MPI_Finalize();
  return failures == 0 ? 0 : 1;
}
