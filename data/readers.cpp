#include "data/readers.h"

#include <fmt/format.h>
#include <simdjson.h>
#include <zlib.h>
#include <zstd.h>

#include <fstream>
#include <memory>

#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {

std::string raw_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MOE_CHECK(in, DataError, "{}: cannot read", path.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// gzip (and concatenated members) through zlib's inflate with automatic header detection.
std::string gunzip(const std::string& in, const fs::path& path, BadInput& bad) {
  z_stream z{};
  MOE_ASSERT(inflateInit2(&z, 15 + 32) == Z_OK, "inflateInit2");
  std::string out;
  char buf[1 << 16];
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  int rc = Z_OK;
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
    if (rc == Z_STREAM_END && z.avail_in > 0) rc = inflateReset(&z);  // another gzip member
    else if (rc != Z_OK) break;
    if (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0) break;  // all input used, stream not ended
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END)
    bad.add(fmt::format("{}: truncated or damaged gzip stream after {} bytes ({})", path.string(), out.size(),
                        z.msg ? z.msg : "unexpected end"));
  return out;
}

std::string unzstd(const std::string& in, const fs::path& path, BadInput& bad) {
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  std::string out;
  std::vector<char> buf(ZSTD_DStreamOutSize());
  ZSTD_inBuffer src{in.data(), in.size(), 0};
  std::size_t left = 1;  // ZSTD_decompressStream's hint: 0 once a frame is complete
  while (src.pos < src.size) {
    ZSTD_outBuffer dst{buf.data(), buf.size(), 0};
    left = ZSTD_decompressStream(ctx.get(), &dst, &src);
    if (ZSTD_isError(left)) {
      bad.add(fmt::format("{}: damaged zstd stream after {} bytes ({})", path.string(), out.size(),
                          ZSTD_getErrorName(left)));
      return out;
    }
    out.append(buf.data(), dst.pos);
  }
  for (ZSTD_outBuffer dst{buf.data(), buf.size(), 0}; left != 0; dst.pos = 0) {  // flush what it holds
    left = ZSTD_decompressStream(ctx.get(), &dst, &src);
    if (ZSTD_isError(left) || dst.pos == 0) break;
    out.append(buf.data(), dst.pos);
  }
  if (left != 0) bad.add(fmt::format("{}: truncated zstd stream after {} bytes", path.string(), out.size()));
  return out;
}

}  // namespace

bool is_compressed(const fs::path& p) { return p.extension() == ".gz" || p.extension() == ".zst"; }

std::string without_compression(const fs::path& p) {
  return (is_compressed(p) ? p.parent_path() / p.stem() : p).filename().string();
}

std::string read_bytes(const fs::path& path, BadInput& bad) {
  const std::string raw = raw_bytes(path);
  if (path.extension() == ".gz") return gunzip(raw, path, bad);
  if (path.extension() == ".zst") return unzstd(raw, path, bad);
  return raw;
}

void jsonl_documents(const std::string& text, const fs::path& file, const std::string& field,
                     std::vector<std::string>& docs, BadInput& bad) {
  simdjson::dom::parser parser;  // (the DOM parser validates the whole record, not just the field's path)
  std::size_t begin = 0;
  for (std::int64_t line = 1; begin < text.size(); ++line) {
    std::size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string_view record(text.data() + begin, end - begin);
    begin = end + 1;
    if (record.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank lines between records
    ++bad.records;
    simdjson::dom::element doc;
    std::string_view value;
    if (parser.parse(record.data(), record.size()).get(doc) || doc[field].get_string().get(value)) {
      bad.add(fmt::format("{}:{}: not a JSON object with a string \"{}\"", file.string(), line, field));
      continue;
    }
    if (value.find_first_not_of(" \t\r\n") != std::string_view::npos) docs.emplace_back(value);
  }
}

}  // namespace moe::data
