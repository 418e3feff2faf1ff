// Token shards: the on-disk format of prepared data (docs/DATA.md).
//   offset  0: magic "MOESHARD" (8 bytes)
//           8: version, u32 = 1
//          12: bytes per token, u32 = 2 (u16 ids) or 4 (u32 ids)
//          16: token count, u64
//          24: vocabulary size, u64 (every id is below it)
//          32: reserved, zero (32 bytes)
//          64: the tokens, little-endian
// A split ("train", "val") is the concatenation of DIR/<split>_NNNNN.bin in name order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe::data {

constexpr std::uint32_t kShardVersion = 1;

// The loss mask of a split (chat data) is a split of its own, shards of vocabulary 2 (1 = the
// token at the same place is a target): mask_train_NNNNN.bin beside train_NNNNN.bin.
inline std::string mask_split(const std::string& split) { return "mask_" + split; }
constexpr std::size_t kShardHeader = 64;

// Writes a shard atomically (temporary name, then rename).
void write_shard(const std::string& path, const std::vector<std::uint32_t>& tokens, std::uint64_t vocab_size);

// A read-only, memory-mapped shard; validated on open (DataError naming the file).
class Shard {
 public:
  Shard(const std::string& path, std::uint64_t expected_vocab);
  ~Shard();
  Shard(Shard&& o) noexcept;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  Shard& operator=(Shard&&) = delete;
  std::uint64_t size() const { return count_; }
  std::uint32_t operator[](std::uint64_t i) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
  std::uint64_t count_ = 0;
  std::uint32_t width_ = 0;
};

// All shards of one split, as one token stream.
class TokenStream {
 public:
  TokenStream(const std::string& dir, const std::string& split, std::uint64_t expected_vocab);
  // Tokens held in memory (moe eval on a text file), described as `what`.
  TokenStream(std::vector<std::int32_t> tokens, std::string what);
  std::uint64_t size() const { return total_; }
  // Copies tokens [begin, begin + n) into out.
  void read(std::uint64_t begin, std::uint64_t n, std::int32_t* out) const;
  const std::string& describe() const { return what_; }

 private:
  std::vector<Shard> shards_;
  std::vector<std::uint64_t> starts_;  // first stream index of each shard
  std::vector<std::int32_t> memory_;   // the tokens of a stream held in memory (then no shards)
  std::uint64_t total_ = 0;
  std::string what_;
};

}  // namespace moe::data
