#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/readers.h"
#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {

// The length of the valid UTF-8 sequence starting at s[i], or 0 where none does.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the second byte's range (narrower after E0, ED, F0, F4)
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c == 0xE0) n = 3, lo = 0xA0;
  else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) n = 3;
  else if (c == 0xED) n = 3, hi = 0x9F;  // (no surrogates)
  else if (c == 0xF0) n = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) n = 4;
  else if (c == 0xF4) n = 4, hi = 0x8F;  // (nothing past U+10FFFF)
  else return 0;
  if (i + n > s.size() || b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

// A document as the policy has it: kept (repaired) or dropped (false).
bool admit(std::string& doc, InvalidUtf8 utf8, Utf8Report& report) {
  if (first_invalid_utf8(doc) < 0) return true;
  if (utf8 == InvalidUtf8::drop) return ++report.dropped, false;
  doc = repair_utf8(doc, report.bytes);
  ++report.repaired;
  return true;
}

// A fortune-format text: "%" lines separate documents. A NUL byte in the first chunk marks a
// binary file (fortune's .dat index), skipped, as git decides.
void text_documents(ByteStream& in, const FilterOptions& opt, const DocumentSink& sink) {
  if (in.head().find('\0') != std::string_view::npos) return;
  std::string doc, line;
  auto flush = [&] {
    if (doc.find_first_not_of(" \t\r\n") != std::string::npos) sink(std::move(doc));
    doc.clear();
  };
  while (in.getline(line)) {
    if (const auto bad = first_invalid_utf8(line); bad >= 0 && opt.invalid_utf8 == InvalidUtf8::refuse)
      throw DataError(
          fmt::format("{}: byte {} (0x{:02x}) is not valid UTF-8; fix the file, or set data.invalid_utf8 to "
                      "replace or drop",
                      in.path().string(), in.line_offset() + std::uint64_t(bad),
                      static_cast<unsigned char>(line[std::size_t(bad)])));
    if (line == "%") flush();
    else doc += line, doc += '\n';
  }
  flush();
}

}  // namespace

std::int64_t first_invalid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) return static_cast<std::int64_t>(i);
    i += n;
  }
  return -1;
}

std::string repair_utf8(std::string_view s, std::int64_t& replaced) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) out += "\xEF\xBF\xBD", ++replaced, ++i;  // U+FFFD
    else out.append(s.substr(i, n)), i += n;
  }
  return out;
}

std::vector<std::string> corpus_files(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw DataError(fmt::format("{}: corpus not found (set data.corpus to a text file or directory)", path));
  if (!fs::is_directory(st) && !fs::is_regular_file(st))  // a FIFO or device: would block or never end
    throw DataError(
        fmt::format("{}: not a regular file or directory; give data.corpus a text file or a directory", path));
  std::vector<std::string> files;
  if (!fs::is_directory(st)) return {path};
  for (const auto& e : fs::directory_iterator(path))
    if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> split_document(std::string doc, std::int64_t max_bytes) {
  std::vector<std::string> parts;
  const auto limit = static_cast<std::size_t>(max_bytes);
  std::size_t at = 0;
  while (doc.size() - at > limit) {
    // The last line end inside the limit, else the last space, else the limit itself (moved
    // back to a character's first byte, so no part splits a UTF-8 sequence).
    std::size_t cut = doc.rfind('\n', at + limit - 1);
    if (cut == std::string::npos || cut < at) cut = doc.rfind(' ', at + limit - 1);
    if (cut == std::string::npos || cut < at) {
      cut = at + limit;
      while (cut > at + 1 && (static_cast<unsigned char>(doc[cut]) & 0xC0) == 0x80) --cut;
    } else {
      ++cut;  // the separator ends its part
    }
    parts.push_back(doc.substr(at, cut - at));
    at = cut;
  }
  parts.push_back(doc.substr(at));
  return parts;
}

void read_file_documents(const std::string& file, const FilterOptions& opt, ReadReport& report,
                         const DocumentSink& sink) {
  BadInput bad;
  const fs::path path(file);
  const bool text = path.extension() != ".parquet" && fs::path(without_compression(path)).extension() != ".jsonl";
  // Each document as data.invalid_utf8 says, the long ones cut into parts (data.max_document_bytes).
  const DocumentSink take = [&](std::string&& doc) {
    if (!admit(doc, opt.invalid_utf8, report.utf8)) return;
    if (text) ++report.records;  // (a JSONL or Parquet reader counts its records itself)
    if (std::int64_t(doc.size()) <= opt.max_document_bytes) return sink(std::move(doc));
    auto parts = split_document(std::move(doc), opt.max_document_bytes);
    ++report.split, report.split_parts += std::int64_t(parts.size());
    for (auto& p : parts) sink(std::move(p));
  };
  if (path.extension() == ".parquet") {  // (compressed inside, page by page)
    parquet_documents(path, opt.text_field, take, bad);
  } else {
    ByteStream in(path, bad);
    if (text) text_documents(in, opt, take);
    else jsonl_documents(in, opt.text_field, take);  // (JSON strings are valid UTF-8: simdjson refuses others)
  }
  report.records += bad.records, report.bad += bad.bad;
  if (report.first_bad.empty()) report.first_bad = bad.first;
}

void check_bad_records(const ReadReport& r, const FilterOptions& opt) {
  MOE_CHECK(double(r.bad) <= opt.max_bad_fraction * double(std::max<std::int64_t>(r.records, 1)), DataError,
            "{}; {} of {} records bad, more than data.max_bad_fraction = {}: fix the input, or raise it", r.first_bad,
            r.bad, r.records, opt.max_bad_fraction);
}

std::vector<std::string> read_documents(const std::string& path, const FilterOptions& opt, ReadReport* report) {
  std::vector<std::string> docs;
  ReadReport counted;
  for (const auto& f : corpus_files(path))
    read_file_documents(f, opt, counted, [&](std::string&& d) { docs.push_back(std::move(d)); });
  if (report) *report = counted;
  check_bad_records(counted, opt);
  if (docs.empty()) throw DataError(fmt::format("{}: no text documents found", path));
  return docs;
}

}  // namespace moe::data
