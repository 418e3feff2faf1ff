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

// A stream decompressor fed a chunk of input at a time; `damage` says how the stream broke
// ("" while it has not).
class Decoder {
 public:
  virtual ~Decoder() = default;
  // Consumes `used` bytes of in[0, n), appending what they decode to out: at least `limit`
  // bytes where there are, not many more (a chunk of compressed input can decode to a
  // thousand times its size). n = 0 drains what the decoder holds.
  virtual void feed(const char* in, std::size_t n, std::size_t& used, std::string& out, std::size_t limit) = 0;
  // Whether the input ended where a stream may end.
  virtual bool complete() const = 0;
  virtual const char* name() const = 0;
  std::string damage;
};

namespace {

// gzip (and concatenated members) through zlib's inflate with automatic header detection.
class Gunzip : public Decoder {
 public:
  Gunzip() { MOE_ASSERT(inflateInit2(&z_, 15 + 32) == Z_OK, "inflateInit2"); }
  ~Gunzip() override { inflateEnd(&z_); }
  void feed(const char* in, std::size_t n, std::size_t& used, std::string& out, std::size_t limit) override {
    char buf[1 << 16];
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in));
    z_.avail_in = static_cast<uInt>(n);
    // (inflate leaves output inside only when it filled the buffer: avail_out == 0)
    for (const std::size_t start = out.size();
         damage.empty() && (z_.avail_in > 0 || z_.avail_out == 0) && out.size() - start < limit;) {
      z_.next_out = reinterpret_cast<Bytef*>(buf);
      z_.avail_out = sizeof buf;
      const uInt before = z_.avail_in;
      const int rc = inflate(&z_, Z_NO_FLUSH);
      out.append(buf, sizeof buf - z_.avail_out);
      if (rc == Z_STREAM_END) ended_ = true, inflateReset(&z_);  // (another gzip member may follow)
      else if (rc == Z_OK || rc == Z_BUF_ERROR) ended_ = ended_ && before == z_.avail_in && sizeof buf == z_.avail_out;
      else damage = z_.msg ? z_.msg : "damaged";
      if (rc == Z_BUF_ERROR) break;
    }
    used = n - z_.avail_in;
  }
  bool complete() const override { return ended_; }
  const char* name() const override { return "gzip"; }

 private:
  z_stream z_{};
  bool ended_ = false;
};

class Unzstd : public Decoder {
 public:
  void feed(const char* in, std::size_t n, std::size_t& used, std::string& out, std::size_t limit) override {
    std::vector<char> buf(ZSTD_DStreamOutSize());
    ZSTD_inBuffer src{in, n, 0};
    const std::size_t start = out.size();
    for (bool more = true; more && damage.empty();) {
      ZSTD_outBuffer dst{buf.data(), buf.size(), 0};
      const std::size_t in_before = src.pos;
      const std::size_t hint = ZSTD_decompressStream(ctx_.get(), &dst, &src);
      if (ZSTD_isError(hint)) damage = ZSTD_getErrorName(hint);
      else out.append(buf.data(), dst.pos);
      if (src.pos > in_before || dst.pos > 0) left_ = hint;  // (a drain after the frame's end says nothing)
      more = (src.pos < src.size || dst.pos == dst.size) && out.size() - start < limit;
    }
    used = src.pos;
  }
  bool complete() const override { return left_ == 0; }
  const char* name() const override { return "zstd"; }

 private:
  std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> ctx_{ZSTD_createDCtx(), ZSTD_freeDCtx};
  std::size_t left_ = 1;  // ZSTD_decompressStream's hint: 0 once a frame is complete
};

}  // namespace

bool is_compressed(const fs::path& p) { return p.extension() == ".gz" || p.extension() == ".zst"; }

std::string without_compression(const fs::path& p) {
  return (is_compressed(p) ? p.parent_path() / p.stem() : p).filename().string();
}

ByteStream::ByteStream(const fs::path& path, BadInput& bad) : path_(path), bad_(bad), in_(path, std::ios::binary) {
  MOE_CHECK(in_, DataError, "{}: cannot read", path.string());
  if (path.extension() == ".gz") decoder_ = std::make_unique<Gunzip>();
  if (path.extension() == ".zst") decoder_ = std::make_unique<Unzstd>();
}

ByteStream::~ByteStream() = default;

bool ByteStream::read(std::string& out) {
  const std::size_t before = out.size();
  while (out.size() == before && !ended_) {
    if (pending_.empty() && !eof_) {
      pending_.resize(kChunk);
      in_.read(pending_.data(), kChunk);
      pending_.resize(static_cast<std::size_t>(in_.gcount()));
      raw_bytes_ += pending_.size();
      eof_ = pending_.empty();
    }
    if (!decoder_) {
      ended_ = eof_;
      out += pending_, pending_.clear();
      continue;
    }
    std::size_t used = 0;
    decoder_->feed(pending_.data(), pending_.size(), used, out, kChunk);  // (at the end: drained)
    pending_.erase(0, used);
    const bool stalled = used == 0 && out.size() == before;
    if (!decoder_->damage.empty()) {  // what decoded before the damage is kept
      bad_.add(fmt::format("{}: truncated or damaged {} stream after {} bytes ({})", path_.string(), decoder_->name(),
                           decoded_ + (out.size() - before), decoder_->damage));
      ended_ = true;
    } else if (eof_ && stalled) {  // the end of the file, and nothing left inside the decoder
      ended_ = true;
      if (!decoder_->complete())
        bad_.add(fmt::format("{}: truncated or damaged {} stream after {} bytes (unexpected end)", path_.string(),
                             decoder_->name(), decoded_));
    } else if (stalled) {
      bad_.add(fmt::format("{}: damaged {} stream after {} bytes (the decoder takes no more)", path_.string(),
                           decoder_->name(), decoded_));
      ended_ = true;
    }
  }
  decoded_ += out.size() - before;
  return out.size() > before;
}

std::string_view ByteStream::head() {
  if (buf_.empty()) read(buf_);
  return buf_;
}

bool ByteStream::getline(std::string& line, bool cr_ends_line) {
  line.clear();
  const char* ends = cr_ends_line ? "\r\n" : "\n";
  while (true) {
    line_offset_ = buf_offset_ + at_;
    const std::size_t end = buf_.find_first_of(ends, std::max(at_, scanned_));  // (long lines: no rescans)
    if (end != std::string::npos && (buf_[end] == '\n' || end + 1 < buf_.size() || ended_)) {
      line.assign(buf_, at_, end - at_);
      at_ = end + 1 + (buf_[end] == '\r' && end + 1 < buf_.size() && buf_[end + 1] == '\n');
      if (!cr_ends_line && !line.empty() && line.back() == '\r') line.pop_back();  // (CRLF)
      return true;
    }
    scanned_ = (end == std::string::npos ? buf_.size() : end) - at_;  // (in the buffer as erased below)
    buf_.erase(0, at_), buf_offset_ += at_, at_ = 0;
    if (!read(buf_)) {
      if (buf_.find_first_of(ends) != std::string::npos) continue;  // (a CR that ended the file)
      if (buf_.empty()) return false;
      line = std::move(buf_), buf_.clear(), buf_offset_ += line.size();  // the last line, without an end
      scanned_ = 0;
      if (!cr_ends_line && !line.empty() && line.back() == '\r') line.pop_back();
      return true;
    }
  }
}

std::string read_bytes(const fs::path& path, BadInput& bad) {
  std::string out;
  ByteStream in(path, bad);
  while (in.read(out)) {}
  return out;
}

void jsonl_documents(ByteStream& in, const std::string& field, const DocumentSink& sink) {
  simdjson::dom::parser parser;  // (the DOM parser validates the whole record, not just the field's path)
  std::string record;
  for (std::int64_t line = 1; in.getline(record, false); ++line) {         // (JSON may hold a CR between tokens)
    if (record.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines between records
    ++in.bad().records;
    simdjson::dom::element doc;
    std::string_view value;
    if (parser.parse(record.data(), record.size()).get(doc) || doc[field].get_string().get(value)) {
      in.bad().add(fmt::format("{}:{}: not a JSON object with a string \"{}\"", in.path().string(), line, field));
      continue;
    }
    if (value.find_first_not_of(" \t\r\n") != std::string_view::npos) sink(std::string(value));
  }
}

}  // namespace moe::data
