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

// Documents from `path`, a text file or a directory of them (read in name order, not
// recursively). Inside a file, a line holding only "%" separates documents (the fortune
// database convention); a file without one is one document. Files with NUL bytes (binary,
// e.g. fortune's .dat index) and empty documents are skipped. CRLF and CR line ends read as LF.
// Throws DataError naming the path when it is missing, is neither a regular file nor a
// directory (a FIFO or a device), or yields no document. Invalid UTF-8 as `utf8` says (refuse:
// a DataError naming the file and the byte), counted into `report` where given.
std::vector<std::string> read_documents(const std::string& path, InvalidUtf8 utf8 = InvalidUtf8::replace,
                                        Utf8Report* report = nullptr);

}  // namespace moe::data
