#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include "kernels/error.h"

namespace moe::data {

Tokenizer::Tokenizer(const std::string& path)
    : path_(path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto status = sp_->Load(path);
  MOE_CHECK(status.ok(), DataError, "{}: cannot load the tokenizer ({}); give a tokenizer.model of moe data prepare",
            path, status.ToString());
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  const auto status = sp_->Encode(text, &ids);
  MOE_CHECK(status.ok(), DataError, "{}: encoding: {}", path_, status.ToString());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  const auto status = sp_->Decode(ids, &text);
  MOE_CHECK(status.ok(), DataError, "{}: decoding: {}", path_, status.ToString());
  return text;
}

std::int64_t Tokenizer::size() const { return sp_->GetPieceSize(); }

}  // namespace moe::data
