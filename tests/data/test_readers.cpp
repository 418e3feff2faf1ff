// Corpus readers: JSONL records (simdjson), gzip (zlib) and zstd files written here by the
// libraries themselves, bad lines and truncated streams counted and named, and
// data.max_bad_fraction deciding when reading stops.
#include <catch2/catch.hpp>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>

#include "data/chat.h"
#include "data/corpus.h"
#include "kernels/error.h"

using namespace moe;
using namespace moe::data;
namespace fs = std::filesystem;

namespace {
void write(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }
std::string gzip(const std::string& text) {
  const std::string tmp = "tmp.gz";
  gzFile f = gzopen(tmp.c_str(), "wb");
  gzwrite(f, text.data(), static_cast<unsigned>(text.size()));
  gzclose(f);
  std::ifstream in(tmp, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
std::string zstd(const std::string& text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  out.resize(ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 3));
  return out;
}
const std::string kRecords = R"({"text": "first document", "id": 1}
{"id": 2, "text": "second, with a \"quote\" and \u00e9"}

{"text": "third"}
)";
}  // namespace

TEST_CASE("readers: JSONL records plain, gzip and zstd, their text field as documents", "[data]") {
  fs::create_directories("readers_ok");
  write("readers_ok/a.jsonl", kRecords);
  write("readers_ok/b.jsonl.gz", gzip(kRecords));
  write("readers_ok/c.jsonl.zst", zstd(kRecords));
  write("readers_ok/d.txt.gz", gzip("fortune one\n%\nfortune two\n"));
  ReadReport r;
  const auto docs = read_documents("readers_ok", {}, &r);
  REQUIRE(docs.size() == 11);
  for (int f = 0; f < 3; ++f) {
    CHECK(docs[std::size_t(3 * f)] == "first document");
    CHECK(docs[std::size_t(3 * f + 1)] == "second, with a \"quote\" and \xC3\xA9");
    CHECK(docs[std::size_t(3 * f + 2)] == "third");
  }
  CHECK(docs[9] == "fortune one\n");
  CHECK((r.records == 11 && r.bad == 0));
  // Another field; a record without it is bad.
  write("readers_ok/e.jsonl", R"({"body": "under body"})"
                              "\n");
  CHECK_THROWS_WITH(read_documents("readers_ok"), Catch::Contains("readers_ok/e.jsonl:1: not a JSON object with a "
                                                                  "string \"text\"") &&
                                                      Catch::Contains("1 of 12 records bad"));
  CHECK_FALSE(is_chat_corpus("readers_ok/a.jsonl"));  // text records are pre-training data
}

TEST_CASE("readers: bad lines and truncated streams are counted, named and tolerated up to data.max_bad_fraction",
          "[data]") {
  fs::create_directories("readers_bad");
  write("readers_bad/a.jsonl", kRecords + "{not json\n" +
                                   R"({"text": 3})"
                                   "\n");
  const std::string gz = gzip(kRecords + kRecords);
  write("readers_bad/b.jsonl.gz", gz.substr(0, gz.size() - 12));  // cut inside the stream's end
  const std::string zs = zstd(kRecords);
  write("readers_bad/c.jsonl.zst", zs.substr(0, zs.size() / 2));
  CHECK_THROWS_WITH(read_documents("readers_bad"), Catch::Contains("readers_bad/a.jsonl:5: not a JSON object") &&
                                                       Catch::Contains("more than data.max_bad_fraction = 0"));
  ReadReport r;
  const auto docs = read_documents("readers_bad", {.max_bad_fraction = 0.5}, &r);
  CHECK(r.bad == 4);  // two lines, two streams
  CHECK(r.first_bad == "readers_bad/a.jsonl:5: not a JSON object with a string \"text\"");
  CHECK(docs.size() >= 3 + 3);  // a.jsonl's good records and what decoded of the gzip stream
  CHECK(docs.size() < 3 + 6 + 3);
}

TEST_CASE("readers: a truncated gzip or zstd stream is named", "[data]") {
  fs::create_directories("readers_cut");
  const std::string gz = gzip(kRecords);
  write("readers_cut/a.jsonl.gz", gz.substr(0, gz.size() - 12));
  CHECK_THROWS_WITH(read_documents("readers_cut"),
                    Catch::Contains("readers_cut/a.jsonl.gz: truncated or damaged gzip"));
  fs::remove("readers_cut/a.jsonl.gz");
  const std::string zs = zstd(kRecords);
  write("readers_cut/b.jsonl.zst", zs.substr(0, zs.size() - 3));
  CHECK_THROWS_WITH(read_documents("readers_cut"),
                    Catch::Contains("readers_cut/b.jsonl.zst: truncated or damaged zstd"));
}

TEST_CASE("split_document: parts within the limit, at line ends, then spaces, never inside a character",
          "[data][readers]") {
  const std::string line = "the quick brown fox jumps over the lazy dog\n";  // 44 bytes
  std::string doc;
  for (int i = 0; i < 100; ++i) doc += line;
  const auto parts = data::split_document(doc, 100);
  std::string joined;
  for (const auto& p : parts) {
    CHECK(p.size() <= 100);
    CHECK(p.back() == '\n');  // cut after a line end: two whole lines a part
    joined += p;
  }
  CHECK(joined == doc);
  CHECK(parts.size() == 50);
  // One long line: cut after spaces.
  std::string words;
  for (int i = 0; i < 100; ++i) words += "word ";
  for (const auto& p : data::split_document(words, 64)) CHECK((p.size() <= 64 && p.back() == ' '));
  // No separator: cut at the limit, moved back to a character's first byte (é is 2 bytes).
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xC3\xA9";
  joined.clear();
  for (const auto& p : data::split_document(accents, 33)) {
    CHECK(p.size() <= 33);
    CHECK(data::first_invalid_utf8(p) == -1);
    joined += p;
  }
  CHECK(joined == accents);
  CHECK(data::split_document("short", 100) == std::vector<std::string>{"short"});
}

TEST_CASE("readers: a stream that decompresses a thousandfold is read a chunk at a time", "[data][readers]") {
  // 48 MiB of one repeated line compress to some 50 kB (gzip) and 5 kB (zstd): one raw
  // chunk holds all of it, yet each read hands back about a MiB, and the lines are all there.
  fs::create_directories("readers_bomb");
  std::string text;
  for (int i = 0; i < (48 << 20) / 16; ++i) text += "fifteen bytes.\n";
  write("readers_bomb/a.txt.gz", gzip(text));
  write("readers_bomb/a.txt.zst", zstd(text));
  for (const char* name : {"readers_bomb/a.txt.gz", "readers_bomb/a.txt.zst"}) {
    BadInput bad;
    ByteStream in(name, bad);
    std::string chunk;
    std::size_t total = 0, largest = 0;
    while (in.read(chunk)) largest = std::max(largest, chunk.size()), total += chunk.size(), chunk.clear();
    CHECK(total == text.size());
    CHECK(largest <= (std::size_t{1} << 20) + (std::size_t{1} << 17));
    CHECK(bad.bad == 0);
    BadInput bad2;
    ByteStream lines(name, bad2);
    std::size_t n = 0;
    for (std::string line; lines.getline(line); ++n) REQUIRE(line == "fifteen bytes.");
    CHECK(n == text.size() / 15);
  }
}
