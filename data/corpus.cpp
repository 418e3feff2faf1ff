#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {

void split_file(const fs::path& file, std::vector<std::string>& docs) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw DataError(fmt::format("{}: cannot read", file.string()));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string raw = ss.str();
  if (raw.find('\0') != std::string::npos) return;  // binary
  // CRLF (Windows) and lone CR (old Mac) line ends as LF: "%\r" would not separate documents.
  std::string text;
  text.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i)
    if (raw[i] != '\r') text += raw[i];
    else if (i + 1 == raw.size() || raw[i + 1] != '\n') text += '\n';
  std::string doc, line;
  std::istringstream lines(text);
  auto flush = [&] {
    if (doc.find_first_not_of(" \t\r\n") != std::string::npos) docs.push_back(doc);
    doc.clear();
  };
  while (std::getline(lines, line)) {
    if (line == "%") flush();
    else doc += line + "\n";
  }
  flush();
}

}  // namespace

std::vector<std::string> read_documents(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw DataError(fmt::format("{}: corpus not found (set data.corpus to a text file or directory)", path));
  std::vector<fs::path> files;
  if (!fs::is_directory(st) && !fs::is_regular_file(st))  // a FIFO or device: would block or never end
    throw DataError(
        fmt::format("{}: not a regular file or directory; give data.corpus a text file or a directory", path));
  if (fs::is_directory(st)) {
    // Regular files only; links are skipped since fortune's .u8 names point at files already listed.
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file() && !e.is_symlink()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  std::vector<std::string> docs;
  for (const auto& f : files) split_file(f, docs);
  if (docs.empty()) throw DataError(fmt::format("{}: no text documents found", path));
  return docs;
}

}  // namespace moe::data
