// A prepared directory's SentencePiece tokenizer (tokenizer.model) for the commands that read
// and write text at run time (moe generate, moe eval): ids as moe data prepare made them.
#pragma once
#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moe::data {

class Tokenizer {
 public:
  // DataError naming the file when it is missing or not a SentencePiece model.
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  std::vector<int> encode(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::int64_t size() const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace moe::data
