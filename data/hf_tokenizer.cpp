#include "data/hf_tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>

#include "kernels/error.h"

namespace moe::data {
namespace {

// GPT-2's pre-tokenization regex (ByteLevel with use_regex).
const char* const kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A stretch of text on its way to BPE: its UTF-8 bytes and where they came from. Its first
// `inserted` bytes (a ByteLevel prefix space) have no source bytes: they sit at `begin`, and
// byte i >= inserted came from begin + i - inserted.
struct Span {
  std::string text;
  std::size_t begin;
  std::size_t inserted = 0;
  // Where NFC changed the text, the source stretch every piece of it is reported at.
  std::size_t whole_begin = 0, whole_end = 0;
  bool exact = true;
};

std::string utf8(const icu::UnicodeString& u) {
  std::string s;
  u.toUTF8String(s);
  return s;
}

}  // namespace

struct HfTokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int> vocab;
  std::vector<std::string> tokens;                           // id -> token string (byte-level characters)
  std::unordered_map<std::string, int> ranks;                // "a b" -> merge rank
  std::vector<std::pair<std::string, int>> added;            // content, id; longest first
  std::array<std::vector<std::size_t>, 256> added_by_first;  // indices into added, by first byte
  bool nfc = false, ignore_merges = false;
  struct Step {
    std::unique_ptr<icu::RegexPattern> split;  // null: ByteLevel's mapping step
    bool prefix_space = false;
  };
  std::vector<Step> steps;
  std::array<std::string, 256> byte_char;  // GPT-2's bytes_to_unicode, as UTF-8
  std::unordered_map<std::string, unsigned char> char_byte;

  [[noreturn]] void refuse(const std::string& what) const {
    throw DataError(fmt::format("{}: {} (moe reads byte-level BPE tokenizer.json files: docs/DATA.md)", path, what));
  }
  std::unique_ptr<icu::RegexPattern> compile(const std::string& pattern, bool literal) const {
    UErrorCode err = U_ZERO_ERROR;
    UParseError pe;
    std::unique_ptr<icu::RegexPattern> re(
        icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(pattern), literal ? UREGEX_LITERAL : 0, pe, err));
    if (U_FAILURE(err))
      refuse(fmt::format("pre_tokenizer regex '{}' does not compile ({})", pattern, u_errorName(err)));
    return re;
  }
  void byte_map() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    for (int b = 0, n = 0; b < 256; ++b)
      if (std::find(bs.begin(), bs.end(), b) == bs.end()) bs.push_back(b), cs.push_back(256 + n++);
    for (std::size_t i = 0; i < bs.size(); ++i) {
      const std::string ch = utf8(icu::UnicodeString(static_cast<UChar32>(cs[i])));
      byte_char[std::size_t(bs[i])] = ch, char_byte[ch] = static_cast<unsigned char>(bs[i]);
    }
  }
  void normalizer(const nlohmann::json& n) {
    if (n.is_null()) return;
    const std::string type = n.value("type", "");
    if (type == "NFC") nfc = true;
    else if (type == "Sequence")
      for (const auto& m : n.at("normalizers")) normalizer(m);
    else refuse(fmt::format("normalizer type '{}' is not supported (none, NFC or a Sequence of them)", type));
  }
  void pre_tokenizer(const nlohmann::json& p) {
    if (p.is_null()) return;
    const std::string type = p.value("type", "");
    if (type == "Sequence") {
      for (const auto& q : p.at("pretokenizers")) pre_tokenizer(q);
    } else if (type == "Split") {
      if (p.value("behavior", "") != "Isolated" || p.value("invert", false))
        refuse("pre_tokenizer Split: only behavior Isolated without invert is supported");
      const auto& pat = p.at("pattern");
      const bool literal = pat.contains("String");
      steps.push_back({compile(pat.at(literal ? "String" : "Regex").get<std::string>(), literal)});
    } else if (type == "Digits") {
      steps.push_back({compile(p.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+", false)});
    } else if (type == "ByteLevel") {  // the prefix space first, then the regex (the byte map is bpe()'s)
      steps.push_back({nullptr, p.value("add_prefix_space", false)});
      if (p.value("use_regex", true)) steps.push_back({compile(kGpt2Regex, false)});
    } else {
      refuse(fmt::format("pre_tokenizer type '{}' is not supported (Split, Digits, ByteLevel, Sequence)", type));
    }
  }
  void model(const nlohmann::json& m) {
    if (m.value("type", "") != "BPE")
      refuse(fmt::format("model type '{}': only BPE is supported", m.value("type", "")));
    if (m.value("byte_fallback", false)) refuse("model.byte_fallback (SentencePiece-style BPE) is not supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (m.contains(k) && !m[k].is_null() && !m[k].get<std::string>().empty())
        refuse(fmt::format("model.{} is not supported", k));
    ignore_merges = m.value("ignore_merges", false);
    for (const auto& [token, id] : m.at("vocab").items()) vocab[token] = id.get<int>();
    int rank = 0;
    for (const auto& merge : m.at("merges")) {  // "a b" (older files) or ["a", "b"]
      const std::string key = merge.is_string() ? merge.get<std::string>()
                                                : merge.at(0).get<std::string>() + " " + merge.at(1).get<std::string>();
      ranks.emplace(key, rank++);
    }
  }
  void index_tokens() {
    int top = -1;
    for (const auto& [t, id] : vocab) top = std::max(top, id);
    for (const auto& [t, id] : added) top = std::max(top, id);
    tokens.assign(std::size_t(top + 1), "");
    for (const auto& [t, id] : vocab) tokens[std::size_t(id)] = t;
  }

  // Text without added tokens -> pre-tokenized spans (source byte offsets kept).
  std::vector<Span> pre_tokenize(const std::string& text, std::size_t base) const;
  void bpe(const Span& s, std::vector<Piece>& out) const;
};

std::vector<HfTokenizer::Piece> HfTokenizer::encode(const std::string& text) const {
  std::vector<Piece> out;
  const auto& I = *impl_;
  // Added tokens first, leftmost and then longest, as the library's split does.
  std::size_t at = 0, plain = 0;
  const auto flush = [&](std::size_t end) {
    if (end > plain)
      for (const Span& s : I.pre_tokenize(text.substr(plain, end - plain), plain)) I.bpe(s, out);
  };
  while (at < text.size()) {
    const auto& candidates = I.added_by_first[static_cast<unsigned char>(text[at])];  // (longest first)
    const auto hit = std::find_if(candidates.begin(), candidates.end(), [&](std::size_t k) {
      return text.compare(at, I.added[k].first.size(), I.added[k].first) == 0;
    });
    if (hit == candidates.end()) {
      ++at;
      continue;
    }
    const auto& [content, id] = I.added[*hit];
    flush(at);
    out.push_back({id, at, at + content.size()});
    at += content.size(), plain = at;
  }
  flush(text.size());
  return out;
}

std::vector<Span> HfTokenizer::Impl::pre_tokenize(const std::string& text, std::size_t base) const {
  std::vector<Span> spans;
  if (nfc) {
    UErrorCode err = U_ZERO_ERROR;
    const icu::Normalizer2* n = icu::Normalizer2::getNFCInstance(err);
    const icu::UnicodeString u = n->normalize(icu::UnicodeString::fromUTF8(text), err);
    const std::string normalized = utf8(u);
    // Offsets stay exact where NFC changes nothing (the common case); otherwise every piece
    // of the stretch points at the whole stretch.
    const bool same = normalized == text;
    spans.push_back({normalized, base, 0, base, base + text.size(), same});
  } else {
    spans.push_back({text, base});
  }
  for (const Step& step : steps) {
    std::vector<Span> next;
    for (Span& s : spans) {
      if (!step.split) {  // ByteLevel: the prefix space; the byte mapping happens in bpe()
        if (step.prefix_space && (s.text.empty() || s.text[0] != ' ')) s.text = " " + s.text, ++s.inserted;
        next.push_back(std::move(s));
        continue;
      }
      const icu::UnicodeString u = icu::UnicodeString::fromUTF8(s.text);
      std::vector<std::size_t> byte_at(std::size_t(u.length()) + 1, 0);  // UTF-16 index -> UTF-8 offset
      for (int32_t i = 0, b = 0; i < u.length();) {
        const UChar32 c = u.char32At(i);
        const int32_t units = U16_LENGTH(c), bytes = U8_LENGTH(c);
        for (int32_t k = 0; k < units; ++k) byte_at[std::size_t(i + k)] = std::size_t(b);
        i += units, b += bytes;
        byte_at[std::size_t(i)] = std::size_t(b);
      }
      UErrorCode err = U_ZERO_ERROR;
      std::unique_ptr<icu::RegexMatcher> m(step.split->matcher(u, err));
      std::size_t last = 0;
      const auto piece = [&](std::size_t a, std::size_t b) {
        if (b <= a) return;
        const std::size_t inserted = a < s.inserted ? s.inserted - a : 0;
        next.push_back({s.text.substr(a, b - a), s.begin + (a > s.inserted ? a - s.inserted : 0), inserted,
                        s.whole_begin, s.whole_end, s.exact});
      };
      while (m->find(err) && U_SUCCESS(err)) {
        const std::size_t a = byte_at[std::size_t(m->start(err))], b = byte_at[std::size_t(m->end(err))];
        piece(last, a), piece(a, b), last = b;
      }
      piece(last, s.text.size());
    }
    spans = std::move(next);
  }
  return spans;
}

void HfTokenizer::Impl::bpe(const Span& s, std::vector<Piece>& out) const {
  struct Symbol {
    std::string text;  // byte-level characters
    std::size_t begin, end;
  };
  std::vector<Symbol> word;
  std::string whole;
  for (std::size_t i = 0; i < s.text.size(); ++i) {
    const std::string& ch = byte_char[static_cast<unsigned char>(s.text[i])];
    const bool inserted = i < s.inserted;
    const std::size_t src = inserted ? s.begin : s.begin + i - s.inserted;
    if (!s.exact) word.push_back({ch, s.whole_begin, s.whole_end});
    else word.push_back({ch, src, inserted ? src : src + 1});
    whole += word.back().text;
  }
  if (word.empty()) return;
  const auto id_of = [&](const std::string& t) {
    const auto it = vocab.find(t);
    if (it == vocab.end()) refuse(fmt::format("the token '{}' is in no vocabulary entry", t));
    return it->second;
  };
  if (ignore_merges && vocab.count(whole)) {
    out.push_back({id_of(whole), word.front().begin, word.back().end});
    return;
  }
  while (word.size() > 1) {
    int best = std::numeric_limits<int>::max();
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = ranks.find(word[i].text + " " + word[i + 1].text);
      if (it != ranks.end() && it->second < best) best = it->second, at = i;
    }
    if (best == std::numeric_limits<int>::max()) break;
    word[at].text += word[at + 1].text, word[at].end = word[at + 1].end;
    word.erase(word.begin() + std::ptrdiff_t(at) + 1);
  }
  for (const Symbol& sym : word) out.push_back({id_of(sym.text), sym.begin, sym.end});
}

HfTokenizer::HfTokenizer(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& I = *impl_;
  I.path = path;
  std::ifstream in(path);
  MOE_CHECK(in, DataError, "{}: cannot read the tokenizer", path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
    I.byte_map();
    I.normalizer(j.value("normalizer", nlohmann::json()));
    I.pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()));
    if (std::none_of(I.steps.begin(), I.steps.end(), [](const Impl::Step& s) { return !s.split; }))
      I.refuse("no ByteLevel pre_tokenizer: only byte-level BPE is supported");
    I.model(j.at("model"));
    for (const auto& a : j.value("added_tokens", nlohmann::json::array()))
      I.added.emplace_back(a.at("content").get<std::string>(), a.at("id").get<int>());
    std::stable_sort(I.added.begin(), I.added.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    for (std::size_t k = 0; k < I.added.size(); ++k)
      if (!I.added[k].first.empty()) I.added_by_first[static_cast<unsigned char>(I.added[k].first[0])].push_back(k);
    const auto& d = j.value("decoder", nlohmann::json());
    if (!d.is_null() && d.value("type", "") != "ByteLevel")
      I.refuse(fmt::format("decoder type '{}': only ByteLevel is supported", d.value("type", "")));
  } catch (const nlohmann::json::exception& e) {
    throw DataError(fmt::format("{}: not a tokenizer.json ({})", path, e.what()));
  }
  I.index_tokens();
}

HfTokenizer::~HfTokenizer() = default;
HfTokenizer::HfTokenizer(HfTokenizer&&) noexcept = default;

std::string HfTokenizer::decode(const std::vector<int>& ids) const {
  const Impl& I = *impl_;
  std::string out;
  for (int id : ids) {
    MOE_CHECK(id >= 0 && std::size_t(id) < I.tokens.size(), DataError, "{}: id {} is outside the vocabulary", I.path,
              id);
    const auto added = std::find_if(I.added.begin(), I.added.end(), [&](const auto& a) { return a.second == id; });
    if (added != I.added.end()) {
      out += added->first;
      continue;
    }
    const icu::UnicodeString u = icu::UnicodeString::fromUTF8(I.tokens[std::size_t(id)]);
    for (int32_t i = 0; i < u.length();) {
      const UChar32 c = u.char32At(i);
      const auto it = I.char_byte.find(utf8(icu::UnicodeString(c)));
      if (it != I.char_byte.end()) out += static_cast<char>(it->second);
      i += U16_LENGTH(c);
    }
  }
  // Tokens may end inside a character: ill-formed bytes become U+FFFD, one per maximal ill-formed
  // subsequence, as the library's String::from_utf8_lossy does.
  return utf8(icu::UnicodeString::fromUTF8(out));
}

std::int64_t HfTokenizer::size() const { return std::int64_t(impl_->tokens.size()); }

int HfTokenizer::token_id(const std::string& content) const {
  for (const auto& [c, id] : impl_->added)
    if (c == content) return id;
  return -1;
}

}  // namespace moe::data
