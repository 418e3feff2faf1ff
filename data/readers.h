// Compressed, JSONL and Parquet corpora (docs/DATA.md): a file's bytes, decompressed by its
// extension (.gz through zlib, .zst through zstd), the documents of JSONL records (simdjson),
// one a line, the text under a field, and Parquet rows' text column (Arrow), streamed: a
// chunk, a line or a row group in memory at a time.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moe::data {

// What reading met that it could not use: lines that are not a JSON object with a string
// under the text field, and damaged or truncated compressed streams (one each); the first
// named "file:line: why".
struct BadInput {
  std::int64_t records = 0, bad = 0;
  std::string first;
  void add(const std::string& where) {
    if (bad++ == 0) first = where;
  }
};

// Whether the name ends with .gz or .zst, and the name without it.
bool is_compressed(const std::filesystem::path& p);
std::string without_compression(const std::filesystem::path& p);

// Where a reader hands each document it reads.
using DocumentSink = std::function<void(std::string&&)>;

// The bytes of a file, decompressed where its name says it is compressed (.gz, .zst), a
// chunk at a time: what reading holds is a chunk and a line, whatever the file's size. A
// damaged or truncated stream ends where the damage starts (what decoded before is kept) and
// is counted in `bad` ("file: truncated or damaged gzip stream after N bytes ...").
class ByteStream {
 public:
  ByteStream(const std::filesystem::path& path, BadInput& bad);
  ~ByteStream();
  // The next decoded bytes appended to out; false at the end.
  bool read(std::string& out);
  // The next line, without its end (LF, CRLF or a lone CR; LF and CRLF only where
  // !cr_ends_line); false at the end.
  bool getline(std::string& line, bool cr_ends_line = true);
  // The decoded offset of the last line getline returned.
  std::uint64_t line_offset() const { return line_offset_; }
  // The first decoded chunk (what getline will read first), for a look at the file's kind.
  std::string_view head();
  const std::filesystem::path& path() const { return path_; }
  BadInput& bad() { return bad_; }
  std::uint64_t raw_bytes() const { return raw_bytes_; }  // of the file, read so far

 private:
  static constexpr std::size_t kChunk = 1 << 20;
  std::filesystem::path path_;
  BadInput& bad_;
  std::ifstream in_;
  std::unique_ptr<class Decoder> decoder_;
  std::string pending_, buf_;  // raw bytes not yet decoded; decoded bytes not yet returned as lines
  std::size_t at_ = 0;         // the next line's start in buf_
  std::size_t scanned_ = 0;    // buf_ holds no line end before this (past at_)
  std::uint64_t raw_bytes_ = 0, decoded_ = 0, buf_offset_ = 0,
                line_offset_ = 0;     // (decoded offsets of buf_[0], a line)
  bool eof_ = false, ended_ = false;  // the file read to its end; the stream too
};

// All the bytes of `path` (ByteStream's), for small files.
std::string read_bytes(const std::filesystem::path& path, BadInput& bad);

// Each row's `field` of a Parquet file (a string column), row group by row group (one in
// memory at a time): the documents, in order. A file Arrow cannot open (truncated, not
// Parquet) or without the column is one bad record; a row group that fails to decode, each of
// its rows; a null text, one. DataError if this moe was built without Arrow
// (parquet_supported()).
bool parquet_supported();
void parquet_documents(const std::filesystem::path& file, const std::string& field, const DocumentSink& sink,
                       BadInput& bad);

// Each JSONL record's `field` (one record a line): the documents, in order.
void jsonl_documents(ByteStream& in, const std::string& field, const DocumentSink& sink);

}  // namespace moe::data
