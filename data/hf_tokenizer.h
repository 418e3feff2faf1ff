// A Hugging Face tokenizer.json (the `tokenizers` library's format) of the byte-level BPE
// family that DeepSeek-V3, Llama 3, Qwen2 and GPT-2 publish: added (special) tokens split
// out first, an optional NFC normalizer, pre-tokenizers (Split by regex with the Isolated
// behaviour, Digits, ByteLevel with or without its GPT-2 regex, and Sequences of them), then
// BPE merges by rank (ignore_merges honoured) over GPT-2's byte-to-character map; decoding by
// the ByteLevel decoder. Regexes run in ICU (\p{L}, \p{N}, look-ahead: the Oniguruma syntax
// these files use). Anything else in the file (a WordPiece or Unigram model, another
// pre-tokenizer or normalizer, byte_fallback) is refused with the key named, rather than
// tokenized differently. Ids equal `Tokenizer.encode(text, add_special_tokens=False).ids`
// (tests/data/hf_tokenizer_check.py holds them to it).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace moe::data {

class HfTokenizer {
 public:
  // DataError naming the file and key on anything unsupported or malformed.
  explicit HfTokenizer(const std::string& path);
  ~HfTokenizer();
  HfTokenizer(HfTokenizer&&) noexcept;

  struct Piece {
    int id;
    std::size_t begin, end;  // its bytes in the text (added tokens: theirs; byte-level: the source bytes)
  };
  std::vector<Piece> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::int64_t size() const;  // the largest id + 1 (vocabulary and added tokens)
  // An added token's id by its content; -1 if none.
  int token_id(const std::string& content) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::data
