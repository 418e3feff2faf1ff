#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {
constexpr char kMagic[8] = {'M', 'O', 'E', 'S', 'H', 'A', 'R', 'D'};
template <class T>
T read_le(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // x86-64 and aarch64 are little-endian, as the format
  return v;
}
}  // namespace

void write_shard(const std::string& path, const std::vector<std::uint32_t>& tokens, std::uint64_t vocab) {
  const std::uint32_t width = vocab <= 65536 ? 2 : 4;
  unsigned char header[kShardHeader] = {};
  std::memcpy(header, kMagic, 8);
  const std::uint32_t version = kShardVersion;
  const std::uint64_t count = tokens.size();
  std::memcpy(header + 8, &version, 4);
  std::memcpy(header + 12, &width, 4);
  std::memcpy(header + 16, &count, 8);
  std::memcpy(header + 24, &vocab, 8);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary);
    out.write(reinterpret_cast<const char*>(header), kShardHeader);
    if (width == 2) {  // narrow once, then one write
      const std::vector<std::uint16_t> narrow(tokens.begin(), tokens.end());
      out.write(reinterpret_cast<const char*>(narrow.data()), static_cast<std::streamsize>(narrow.size() * 2));
    } else {
      out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 4));
    }
    if (!out.flush()) throw DataError(fmt::format("{}: write failed (disk full?)", tmp));
  }
  fs::rename(tmp, path);
}

Shard::Shard(const std::string& path, std::uint64_t expected_vocab) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw DataError(fmt::format("{}: cannot open shard: {}", path, std::strerror(errno)));
  struct stat st {};
  ::fstat(fd, &st);
  map_bytes_ = static_cast<std::size_t>(st.st_size);
  if (map_bytes_ < kShardHeader) {
    ::close(fd);
    throw DataError(fmt::format("{}: not a token shard ({} bytes, shorter than the header); re-run moe data prepare",
                                path, map_bytes_));
  }
  map_ = ::mmap(nullptr, map_bytes_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) throw DataError(fmt::format("{}: mmap failed: {}", path, std::strerror(errno)));
  const auto* h = static_cast<const unsigned char*>(map_);
  auto fail = [&](const std::string& what) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    throw DataError(fmt::format("{}: {}; re-run moe data prepare", path, what));
  };
  if (std::memcmp(h, kMagic, 8) != 0) fail("not a token shard (bad magic)");
  if (read_le<std::uint32_t>(h + 8) != kShardVersion)
    fail(fmt::format("shard version {} unsupported", read_le<std::uint32_t>(h + 8)));
  width_ = read_le<std::uint32_t>(h + 12);
  count_ = read_le<std::uint64_t>(h + 16);
  const auto vocab = read_le<std::uint64_t>(h + 24);
  if (width_ != 2 && width_ != 4) fail(fmt::format("bad token width {}", width_));
  // Divide rather than multiply: a huge count must not wrap around to the file's size.
  if ((map_bytes_ - kShardHeader) % width_ != 0 || count_ != (map_bytes_ - kShardHeader) / width_)
    fail(fmt::format("truncated or padded: header says {} tokens ({} bytes), file has {} bytes", count_,
                     kShardHeader + count_ * width_, map_bytes_));
  if (vocab != expected_vocab)
    fail(fmt::format("vocabulary size {} differs from model.vocab_size = {}", vocab, expected_vocab));
  // Every id inside the vocabulary: a damaged id would index past the embedding table.
  for (std::uint64_t i = 0; i < count_; ++i)
    if ((*this)[i] >= vocab)
      fail(fmt::format("token {} at position {} is outside the vocabulary of {}", (*this)[i], i, vocab));
}

Shard::~Shard() {
  if (map_) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& o) noexcept
    : path_(std::move(o.path_)), map_(o.map_), map_bytes_(o.map_bytes_), count_(o.count_), width_(o.width_) {
  o.map_ = nullptr;
}

std::uint32_t Shard::operator[](std::uint64_t i) const {
  const auto* p = static_cast<const unsigned char*>(map_) + kShardHeader + i * width_;
  return width_ == 2 ? read_le<std::uint16_t>(p) : read_le<std::uint32_t>(p);
}

TokenStream::TokenStream(const std::string& dir, const std::string& split, std::uint64_t expected_vocab) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().filename().string().rfind(split + "_", 0) == 0 && e.path().extension() == ".bin")
      paths.push_back(e.path().string());
  if (ec || paths.empty())
    throw DataError(fmt::format("{}: no {} shards ({}_*.bin); run `moe data prepare CONFIG` first", dir, split, split));
  std::sort(paths.begin(), paths.end());
  for (const auto& p : paths) {
    shards_.emplace_back(p, expected_vocab);
    starts_.push_back(total_);
    total_ += shards_.back().size();
  }
  what_ = fmt::format("{}/{}_*.bin ({} shards, {} tokens)", dir, split, shards_.size(), total_);
}

TokenStream::TokenStream(std::vector<std::int32_t> tokens, std::string what)
    : memory_(std::move(tokens)), total_(memory_.size()), what_(std::move(what)) {}

void TokenStream::read(std::uint64_t begin, std::uint64_t n, std::int32_t* out) const {
  if (shards_.empty()) return void(std::copy_n(memory_.begin() + static_cast<std::ptrdiff_t>(begin), n, out));
  // The shard holding `begin`, then walk forward across shard boundaries.
  std::size_t s =
      static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t g = begin + i;
    while (g >= starts_[s] + shards_[s].size()) ++s;
    out[i] = static_cast<std::int32_t>(shards_[s][g - starts_[s]]);
  }
}

}  // namespace moe::data
