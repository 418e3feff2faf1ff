// Data: shard round trip, loader determinism (restart, rank slices, epochs), bad shards.
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "data/corpus.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "kernels/error.h"
#include "tests/support/corpus.h"

using namespace moe;
using namespace moe::data;
namespace fs = std::filesystem;

namespace {
std::vector<std::int32_t> batch(Loader& l, std::int64_t step, std::int64_t first, std::int64_t count, std::int64_t T) {
  Batch b(count, T, false);
  l.fill(step, first, count, b);
  std::vector<std::int32_t> out(b.tokens.data<std::int32_t>(), b.tokens.data<std::int32_t>() + count * T);
  out.insert(out.end(), b.targets.data<std::int32_t>(), b.targets.data<std::int32_t>() + count * T);
  return out;
}
}  // namespace

TEST_CASE("shards: written tokens read back, header errors name the file", "[data]") {
  const std::vector<std::uint32_t> toks = {5, 0, 70000 % 65536, 12, 1};
  write_shard("t_00000.bin", toks, 65536);
  Shard s("t_00000.bin", 65536);
  REQUIRE(s.size() == toks.size());
  for (std::size_t i = 0; i < toks.size(); ++i) CHECK(s[i] == toks[i]);
  CHECK_THROWS_WITH(Shard("t_00000.bin", 1000),
                    Catch::Contains("t_00000.bin: vocabulary size 65536 differs from model.vocab_size = 1000"));
  fs::resize_file("t_00000.bin", fs::file_size("t_00000.bin") - 1);
  CHECK_THROWS_WITH(Shard("t_00000.bin", 65536), Catch::Contains("t_00000.bin: truncated"));
  std::ofstream("t_00000.bin") << std::string(100, 'x');
  CHECK_THROWS_WITH(Shard("t_00000.bin", 65536), Catch::Contains("bad magic"));
}

TEST_CASE("loader: a restart at step k gives the batches of an uninterrupted run, ranks split the batch", "[data]") {
  testing::write_corpus("loader_corpus.txt", 120);
  prepare({.corpus = "loader_corpus.txt", .out_dir = "loader_data", .vocab_size = 300, .val_fraction = 0.1, .seed = 1});
  TokenStream stream("loader_data", "train", 300);
  const std::int64_t T = 64, G = 8, S = 40;  // few windows: the run below crosses epochs
  Loader a(stream, T, 42, G);
  REQUIRE(a.windows() * 2 < S * G);
  std::vector<std::vector<std::int32_t>> run;
  for (std::int64_t s = 0; s < S; ++s) run.push_back(batch(a, s, 0, G, T));
  Loader b(stream, T, 42, G);  // "resumed" at step 23
  for (std::int64_t s = 23; s < S; ++s) CHECK(batch(b, s, 0, G, T) == run[static_cast<std::size_t>(s)]);
  // Two ranks with 4 rows each hold the same sequences as one with 8.
  Loader r0(stream, T, 42, G), r1(stream, T, 42, G);
  auto x0 = batch(r0, 5, 0, 4, T), x1 = batch(r1, 5, 4, 4, T), full = run[5];
  CHECK(std::equal(x0.begin(), x0.begin() + 4 * T, full.begin()));
  CHECK(std::equal(x1.begin(), x1.begin() + 4 * T, full.begin() + 4 * T));
  // Targets are the inputs shifted by one; another seed gives another order.
  CHECK(std::equal(full.begin() + 1, full.begin() + T, full.begin() + G * T));
  Loader c(stream, T, 43, G);
  CHECK(batch(c, 0, 0, G, T) != run[0]);
}

TEST_CASE("loader: data shorter than one sequence is an error naming the shards", "[data]") {
  testing::write_corpus("short_corpus.txt", 100);
  prepare({.corpus = "short_corpus.txt", .out_dir = "short_data", .vocab_size = 300, .val_fraction = 0.05, .seed = 1});
  TokenStream stream("short_data", "val", 300);
  CHECK_THROWS_WITH(Loader(stream, static_cast<std::int64_t>(stream.size()), 1, 1),
                    Catch::Contains("short_data/val_*.bin") && Catch::Contains("fewer tokens than one sequence"));
}

TEST_CASE("prepare: a missing or empty corpus is an error naming it", "[data]") {
  CHECK_THROWS_WITH(
      prepare({.corpus = "no/such/dir", .out_dir = "x", .vocab_size = 300, .val_fraction = 0.1, .seed = 1}),
      Catch::Contains("no/such/dir: corpus not found"));
  fs::create_directories("empty_corpus");
  CHECK_THROWS_WITH(
      prepare({.corpus = "empty_corpus", .out_dir = "x", .vocab_size = 300, .val_fraction = 0.1, .seed = 1}),
      Catch::Contains("empty_corpus: no text documents found"));
}

TEST_CASE("corpus: CRLF and CR line ends separate documents as LF does", "[data]") {
  const std::string dir = "corpus_line_ends";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/crlf.txt", std::ios::binary) << "one\r\ntwo\r\n%\r\nthree\r\n";
  std::ofstream(dir + "/cr.txt", std::ios::binary) << "four\r%\rfive\r";
  const auto docs = data::read_documents(dir);  // (cr.txt first: name order)
  REQUIRE(docs.size() == 4);
  CHECK(docs[0] == "four\n");
  CHECK(docs[1] == "five\n");
  CHECK(docs[2] == "one\ntwo\n");
  CHECK(docs[3] == "three\n");
}

TEST_CASE("corpus: invalid UTF-8 is replaced, dropped or refused as data.invalid_utf8 says, and counted", "[data]") {
  CHECK(data::first_invalid_utf8("plain \xC3\xA9t\xC3\xA9 \xF0\x9F\x98\x80") == -1);  // 2- and 4-byte sequences
  for (const char* bad : {"\xC0\xAF", "\xED\xA0\x80", "\xF4\x90\x80\x80", "\xE2\x82", "\x80"})  // overlong,
    CHECK(data::first_invalid_utf8(std::string("ok ") + bad) == 3);  // surrogate, past U+10FFFF, cut, stray
  std::int64_t replaced = 0;
  CHECK(data::repair_utf8("a\xE2\x82z", replaced) == "a\xEF\xBF\xBD\xEF\xBF\xBDz");
  CHECK(replaced == 2);

  const std::string dir = "corpus_utf8";
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/a.txt", std::ios::binary) << "good one\n%\nbad \xFF byte\n%\nalso good\n";
  data::ReadReport r;
  auto docs = data::read_documents(dir, {.invalid_utf8 = data::InvalidUtf8::replace}, &r);
  REQUIRE(docs.size() == 3);
  CHECK(docs[1] == "bad \xEF\xBF\xBD byte\n");
  CHECK((r.utf8.bytes == 1 && r.utf8.repaired == 1 && r.utf8.dropped == 0));
  docs = data::read_documents(dir, {.invalid_utf8 = data::InvalidUtf8::drop}, &r);
  CHECK(docs.size() == 2);
  CHECK((r.utf8.bytes == 0 && r.utf8.dropped == 1));
  CHECK_THROWS_WITH(data::read_documents(dir, {.invalid_utf8 = data::InvalidUtf8::refuse}),
                    Catch::Contains("corpus_utf8/a.txt: byte 15 (0xff) is not valid UTF-8"));
}
