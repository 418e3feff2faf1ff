// The pieces that keep moe data prepare's memory bounded: the external sorter against
// std::sort (with more spilled runs than it merges at once), and the seeded permutation that
// draws the held-out split one document at a time (a bijection; exact counts; the seed
// matters).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>

#include "data/external_sort.h"
#include "data/permutation.h"

using namespace moe::data;

TEST_CASE("external sort: spilled runs merge into the order std::sort gives, runs removed after", "[data]") {
  struct Rec {
    std::uint64_t hash, key;
    auto operator<=>(const Rec&) const = default;
  };
  std::mt19937_64 rng(9);
  std::vector<Rec> all;
  for (int i = 0; i < 20000; ++i) all.push_back({rng() % 500, std::uint64_t(i)});  // many equal hashes
  std::filesystem::create_directories("external_sort");
  {
    ExternalSorter<Rec> sorter("external_sort/runs", 99);  // 202 runs (merged 64 at a time first) and 2 in memory
    for (const auto& r : all) sorter.push(r);
    CHECK(sorter.size() == all.size());
    CHECK(std::distance(std::filesystem::directory_iterator("external_sort"), {}) == 202);
    std::vector<Rec> got;
    sorter.for_each([&](const Rec& r) { got.push_back(r); });
    std::sort(all.begin(), all.end());
    CHECK(got == all);
  }
  CHECK(std::filesystem::is_empty("external_sort"));
}

TEST_CASE("seeded permutation: a bijection of 0..n-1 for any n, another for another seed", "[data]") {
  for (std::uint64_t n : {1u, 2u, 3u, 7u, 64u, 1000u, 4097u}) {
    const SeededPermutation p(n, 5), q(n, 6);
    std::set<std::uint64_t> seen;
    std::uint64_t moved = 0, differ = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const auto x = p(i);
      REQUIRE(x < n);
      seen.insert(x);
      moved += x != i, differ += x != q(i);
    }
    CHECK(seen.size() == n);  // (so exactly k land below k: the held-out count is exact)
    if (n >= 64) CHECK(moved > n / 2);
    if (n >= 64) CHECK(differ > n / 2);
  }
}
