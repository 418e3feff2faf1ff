// Reading a plain-text corpus into documents. This is the raw side of the data pipeline;
// tokenised shards and `moe data prepare` build on it.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config/filter_options.h"
#include "data/readers.h"

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

// What reading met: documents and JSONL records read, and the bad ones skipped (JSONL lines
// that are not an object with a string under the text field, damaged compressed streams).
struct ReadReport {
  Utf8Report utf8;
  std::int64_t records = 0, bad = 0;        // JSONL records and text documents read; bad ones skipped
  std::string first_bad;                    // "file:line: why"
  std::int64_t split = 0, split_parts = 0;  // documents over data.max_document_bytes, and the parts they became
};

// A document cut into parts of at most max_bytes: at the last line end within the limit,
// else the last space, else at the limit (on a UTF-8 character's start); the separator ends
// its part, so the parts concatenate to the document.
std::vector<std::string> split_document(std::string doc, std::int64_t max_bytes);

// The documents of one corpus file (read_documents says how), each handed to `sink` as it is
// read: a chunk, a line, a Parquet row group and a document in memory at a time. Counts into
// `report`; bad records are counted, not refused (check_bad_records).
void read_file_documents(const std::string& file, const FilterOptions& opt, ReadReport& report,
                         const DocumentSink& sink);
// DataError naming the first bad record when more than opt.max_bad_fraction of the records are bad.
void check_bad_records(const ReadReport& report, const FilterOptions& opt);

// Documents from `path`, a text file or a directory of them (read in name order, not
// recursively). A name ending in .gz or .zst is decompressed first (zlib, zstd); a .jsonl
// file holds one JSON record a line, the document its opt.text_field (simdjson). Inside a
// text file, a line holding only "%" separates documents (the fortune database convention);
// a file without one is one document. Files with a NUL byte in their first MiB (binary, e.g. fortune's .dat
// index) and empty documents are skipped. CRLF and CR line ends read as LF.
// Throws DataError naming the path when it is missing, is neither a regular file nor a
// directory (a FIFO or a device), or yields no document. Invalid UTF-8 as opt.invalid_utf8
// says (refuse: a DataError naming the file and the byte); bad records skipped and counted, a
// DataError naming the first when more than opt.max_bad_fraction of the records are bad.
// Counts into `report` where given. (Of opt, only these reading keys apply here.)
std::vector<std::string> read_documents(const std::string& path, const FilterOptions& opt = {},
                                        ReadReport* report = nullptr);

// The files a corpus path names: the path itself, or a directory's regular files in name
// order (not recursively; links skipped, as fortune's .u8 names point at files listed already).
// DataError naming the path when it is missing or neither a regular file nor a directory.
std::vector<std::string> corpus_files(const std::string& path);

}  // namespace moe::data
