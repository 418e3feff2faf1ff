// A prepared directory's tokenizer, for `moe data prepare` and the commands that read and
// write text at run time (moe generate, moe eval): SentencePiece (tokenizer.model, what moe
// data prepare trains) or a Hugging Face tokenizer.json of the byte-level BPE family
// (data/hf_tokenizer.h; an imported model's, with the tokenizer_config.json beside it that
// names its eos_token, the end-of-document id).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moe::data {

class HfTokenizer;

// The tokenizer_config.json beside a Hugging Face tokenizer.json (DataError naming it when it
// is missing or not JSON), and one of its special tokens (a string or {"content": ...}; ""
// when absent).
nlohmann::json tokenizer_config(const std::string& tokenizer_json);
std::string special_token(const nlohmann::json& config, const char* key);

class Tokenizer {
 public:
  // A tokenizer.model or tokenizer.json; DataError naming the file when it is missing or
  // cannot be read as one.
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  // The one a prepared directory holds: tokenizer.json where there is one, else
  // tokenizer.model (moe data prepare writes one of the two).
  static std::string in_dir(const std::string& dir);
  static bool is_hf(const std::string& path);  // a tokenizer.json

  struct Piece {
    int id;
    std::size_t begin, end;  // the text's bytes it covers
  };
  std::vector<int> encode(const std::string& text) const;
  std::vector<Piece> encode_pieces(const std::string& text) const;
  std::string decode(const std::vector<int>& ids) const;
  std::int64_t size() const;    // ids 0 .. size() - 1
  int end_of_document() const;  // SentencePiece: its eos (1); tokenizer.json: eos_token's id
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<HfTokenizer> hf_;
  int eos_ = 1;
};

}  // namespace moe::data
