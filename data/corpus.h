// Reading a plain-text corpus into documents. This is the raw side of the data pipeline;
// tokenised shards and `moe data prepare` build on it.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/filter_options.h"

namespace moe::data {

// What reading did with invalid UTF-8 (InvalidUtf8): bytes replaced, in how many documents,
// and documents dropped.
struct Utf8Report {
  std::int64_t bytes = 0, repaired = 0, dropped = 0;
};

// The offset of the first byte of s that is not part of a valid UTF-8 sequence (RFC 3629: no
// overlong forms, no surrogates, nothing past U+10FFFF), or -1.
std::int64_t first_invalid_utf8(std::string_view s);
// s with each such byte replaced by U+FFFD; `replaced` += their count.
std::string repair_utf8(std::string_view s, std::int64_t& replaced);

// How a corpus is read (data.* keys): invalid UTF-8, JSONL records' text field, and the
// share of bad records (JSONL lines that are not an object with a string there, damaged
// compressed streams) tolerated before reading stops.
struct ReadOptions {
  InvalidUtf8 utf8 = InvalidUtf8::replace;
  std::string text_field = "text";
  double max_bad_fraction = 0;
};
inline ReadOptions read_options(const FilterOptions& f) { return {f.invalid_utf8, f.text_field, f.max_bad_fraction}; }
struct ReadReport {
  Utf8Report utf8;
  std::int64_t records = 0, bad = 0;  // JSONL records and text documents read; bad ones skipped
  std::string first_bad;              // "file:line: why"
};

// Documents from `path`, a text file or a directory of them (read in name order, not
// recursively). A name ending in .gz or .zst is decompressed first (zlib, zstd); a .jsonl
// file holds one JSON record a line, the document its `text_field` (simdjson). Inside a file, a line holding only "%"
// separates documents (the fortune database convention); a file without one is one document. Files with NUL bytes
// (binary, e.g. fortune's .dat index) and empty documents are skipped. CRLF and CR line ends read as LF. Throws
// DataError naming the path when it is missing, is neither a regular file nor a directory (a FIFO or a device), or
// yields no document. Invalid UTF-8 as opt.utf8 says (refuse: a DataError naming the file and the byte); bad records
// skipped and counted, a DataError naming the first when more than opt.max_bad_fraction of the records are bad. Counts
// into `report` where given.
std::vector<std::string> read_documents(const std::string& path, const ReadOptions& opt = {},
                                        ReadReport* report = nullptr);

}  // namespace moe::data
