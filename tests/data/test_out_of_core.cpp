// The pieces that keep moe data prepare's memory bounded and its encoding fast: the external
// sorter against std::sort (with more spilled runs than it merges at once), the seeded permutation that draws the
// held-out split one document at a time (a bijection; exact counts; the seed matters), and
// the encode cache against SentencePiece encoding whole texts.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <random>
#include <set>

#include "data/corpus.h"
#include "data/encode_cache.h"
#include "data/external_sort.h"
#include "data/permutation.h"
#include "data/prepare.h"
#include "data/tokenizer.h"

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

TEST_CASE("encode cache: the parts between spaces encode to the whole text's ids", "[data]") {
  // A tokenizer trained by prepare (it splits at spaces) on the fortunes, then every fortune
  // and texts made to catch the cuts: spaces leading, trailing, doubled, alone; tabs,
  // newlines, non-ASCII, characters its vocabulary lacks (byte fallback).
  prepare({.corpus = "/usr/share/games/fortunes/fortunes",
           .out_dir = "encode_cache",
           .vocab_size = 400,
           .val_fraction = 0.1,
           .seed = 1});
  const Tokenizer tok(Tokenizer::in_dir("encode_cache"));
  REQUIRE(tok.splits_at_spaces());
  std::vector<std::string> texts = {"",
                                    " ",
                                    "  ",
                                    "a",
                                    " a",
                                    "  a",
                                    "a ",
                                    "a  ",
                                    "a b",
                                    "a  b",
                                    " a  b  ",
                                    "tab\tand new\nline \n next",
                                    "caf\xC3\xA9 na\xC3\xAFve  \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x99\x82",
                                    "x \xE2\x96\x81 y",
                                    "repeat repeat repeat  repeat"};
  for (const auto& d : read_documents("/usr/share/games/fortunes/fortunes")) texts.push_back(d);
  EncodeCache cache(tok, 64);  // (small: it fills and starts again many times)
  std::size_t same = 0;
  for (const auto& t : texts) {
    std::vector<std::uint32_t> got;
    cache.encode(t, got);
    const auto want = tok.encode(t);
    same += std::equal(got.begin(), got.end(), want.begin(), want.end());
    if (got.size() != want.size() || !std::equal(got.begin(), got.end(), want.begin())) FAIL_CHECK("differs: " << t);
  }
  CHECK(same == texts.size());
}
