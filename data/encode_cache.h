// Encoding through a cache of the parts of a text between spaces, for moe data prepare: text
// repeats its words, and SentencePiece's lattice over a part costs far more than a lookup.
// Exact where the tokenizer splits at spaces (Tokenizer::splits_at_spaces; else every text is
// encoded whole): a text is cut before each space that a non-space follows, each part
// encoded alone (its space becomes the dummy prefix "▁"), the ids concatenated.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace moe::data {

class EncodeCache {
 public:
  // At most max_parts parts are kept (then the cache starts again): bounded memory, ~8 MB.
  explicit EncodeCache(const Tokenizer& tok, std::size_t max_parts = std::size_t{1} << 16)
      : tok_(tok), max_(max_parts) {}
  // text's ids appended to ids.
  void encode(std::string_view text, std::vector<std::uint32_t>& ids);

 private:
  void encode_part(std::string_view part, std::vector<std::uint32_t>& ids);
  const Tokenizer& tok_;
  std::size_t max_;
  std::unordered_map<std::string, std::vector<std::uint32_t>> parts_;
};

}  // namespace moe::data
