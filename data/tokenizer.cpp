#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "data/hf_tokenizer.h"
#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;

nlohmann::json tokenizer_config(const std::string& tokenizer_json) {
  const fs::path config = fs::path(tokenizer_json).parent_path() / "tokenizer_config.json";
  std::ifstream in(config);
  MOE_CHECK(in, DataError, "{}: no tokenizer_config.json beside it (it names the special tokens)", tokenizer_json);
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt::format("{}: not JSON ({})", config.string(), e.what()));
  }
}

std::string special_token(const nlohmann::json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  const auto content = it->find("content");
  return content != it->end() && content->is_string() ? content->get<std::string>() : "";
}

namespace {
// tokenizer_config.json's eos_token beside a tokenizer.json: the end of a document.
std::string eos_token(const std::string& tokenizer_json) {
  const std::string eos = special_token(tokenizer_config(tokenizer_json), "eos_token");
  MOE_CHECK(!eos.empty(), DataError, "{}'s tokenizer_config.json: no eos_token (the end of a document)",
            tokenizer_json);
  return eos;
}
}  // namespace

bool Tokenizer::is_hf(const std::string& path) { return fs::path(path).extension() == ".json"; }

std::string Tokenizer::in_dir(const std::string& dir) {
  const fs::path json = fs::path(dir) / "tokenizer.json";
  return (fs::exists(json) ? json : fs::path(dir) / "tokenizer.model").string();
}

Tokenizer::Tokenizer(const std::string& path) : path_(path) {
  if (is_hf(path)) {
    hf_ = std::make_unique<HfTokenizer>(path);
    const std::string eos = eos_token(path);
    eos_ = hf_->token_id(eos);
    MOE_CHECK(eos_ >= 0, DataError, "{}: its eos_token '{}' is not one of its added tokens", path, eos);
    return;
  }
  sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp_->Load(path);
  MOE_CHECK(status.ok(), DataError, "{}: cannot load the tokenizer ({}); give a tokenizer.model of moe data prepare",
            path, status.ToString());
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

std::vector<Tokenizer::Piece> Tokenizer::encode_pieces(const std::string& text) const {
  std::vector<Piece> out;
  if (hf_) {
    for (const auto& p : hf_->encode(text)) out.push_back({p.id, p.begin, p.end});
    return out;
  }
  sentencepiece::ImmutableSentencePieceText spt;
  const auto status = sp_->Encode(text, spt.mutable_proto());
  MOE_CHECK(status.ok(), DataError, "{}: encoding: {}", path_, status.ToString());
  for (const auto& piece : spt.pieces()) out.push_back({int(piece.id()), piece.begin(), piece.end()});
  return out;
}

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  if (hf_) {
    for (const auto& p : hf_->encode(text)) ids.push_back(p.id);
    return ids;
  }
  const auto status = sp_->Encode(text, &ids);
  MOE_CHECK(status.ok(), DataError, "{}: encoding: {}", path_, status.ToString());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  if (hf_) return hf_->decode(ids);
  std::string text;
  const auto status = sp_->Decode(ids, &text);
  MOE_CHECK(status.ok(), DataError, "{}: decoding: {}", path_, status.ToString());
  return text;
}

std::int64_t Tokenizer::size() const { return hf_ ? hf_->size() : sp_->GetPieceSize(); }

int Tokenizer::end_of_document() const { return eos_; }

}  // namespace moe::data
