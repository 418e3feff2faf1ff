// Compressed, JSONL and Parquet corpora (docs/DATA.md): a file's bytes, decompressed by its
// extension (.gz through zlib, .zst through zstd), the documents of JSONL records (simdjson),
// one a line, the text under a field, and Parquet rows' text column (Arrow). Whole files in memory for now (the
// data-at-scale issue streams them).
#pragma once
#include <cstdint>
#include <filesystem>
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

// The bytes of `path`, decompressed where it is compressed. A damaged or truncated stream
// keeps what decoded before the damage and is counted in `bad` ("file: truncated ...").
std::string read_bytes(const std::filesystem::path& path, BadInput& bad);

// Each row's `field` of a Parquet file (a string column), row group by row group: the
// documents, in order. A file Arrow cannot open (truncated, not Parquet) or without the
// column is one bad record; a row group that fails to decode, each of its rows; a null text,
// one. DataError if this moe was built without Arrow (parquet_supported()).
bool parquet_supported();
void parquet_documents(const std::filesystem::path& file, const std::string& field, std::vector<std::string>& docs,
                       BadInput& bad);

// Each record's `field` of JSONL `text` (the contents of `file`): the documents, in order.
void jsonl_documents(const std::string& text, const std::filesystem::path& file, const std::string& field,
                     std::vector<std::string>& docs, BadInput& bad);

}  // namespace moe::data
