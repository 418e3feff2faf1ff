// Reading a plain-text corpus into documents. This is the raw side of the data pipeline;
// tokenised shards and `moe data prepare` build on it.
#pragma once
#include <string>
#include <vector>

namespace moe::data {

// Documents from `path`, a text file or a directory of them (read in name order, not
// recursively). Inside a file, a line holding only "%" separates documents (the fortune
// database convention); a file without one is one document. Files with NUL bytes (binary,
// e.g. fortune's .dat index) and empty documents are skipped. CRLF and CR line ends read as LF.
// Throws DataError naming the path when it is missing, is neither a regular file nor a
// directory (a FIFO or a device), or yields no document.
std::vector<std::string> read_documents(const std::string& path);

}  // namespace moe::data
