#include "data/filter.h"

#include <fmt/ranges.h>

#include <xxhash.h>

#include <span>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

namespace moe::data {
namespace {

std::vector<std::string> words_of(const std::string& doc) {
  std::vector<std::string> w;
  std::istringstream in(normalise(doc));
  for (std::string s; in >> s;) w.push_back(std::move(s));
  return w;
}

std::uint64_t hash(const std::string& s, std::uint64_t seed = 0) { return XXH64(s.data(), s.size(), seed); }

// splitmix64: one 64-bit hash per signature slot from one hash per shingle.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

std::string normalise(const std::string& doc) {
  std::string out;
  bool space = false;
  for (unsigned char c : doc) {
    if (std::isspace(c)) {
      space = !out.empty();
      continue;
    }
    if (space) out.push_back(' '), space = false;
    out.push_back(static_cast<char>(std::tolower(c)));
  }
  return out;
}

std::string quality_issue(const std::string& doc, const FilterOptions& opt) {
  const auto words = words_of(doc);
  if (static_cast<std::int64_t>(words.size()) < opt.min_words) return "too_short";
  std::int64_t chars = 0, symbols = 0, digits = 0;
  for (unsigned char c : doc) {
    if (std::isspace(c)) continue;
    ++chars;
    if (std::isdigit(c)) ++digits;
    else if (!std::isalpha(c) && c < 0x80) ++symbols;  // UTF-8 letters (>= 0x80) are not symbols
  }
  if (chars > 0 && double(symbols) / double(chars) > opt.max_symbol_fraction) return "symbols";
  if (chars > 0 && double(digits) / double(chars) > opt.max_digit_fraction) return "digits";
  std::istringstream in(doc);
  std::unordered_set<std::string> seen;
  std::int64_t lines = 0, repeated = 0;
  for (std::string l; std::getline(in, l);) {
    l = normalise(l);
    if (l.empty()) continue;
    ++lines;
    repeated += !seen.insert(l).second;
  }
  if (lines > 0 && double(repeated) / double(lines) > opt.max_repeated_line_fraction) return "repeated_lines";
  if (words.size() >= 100) {  // on shorter texts a repeated phrase is style, not spam
    std::unordered_map<std::string, std::int64_t> bigrams;
    std::int64_t total = 0;
    for (std::size_t i = 0; i + 1 < words.size(); ++i) ++bigrams[words[i] + " " + words[i + 1]];
    for (const auto& w : words) total += static_cast<std::int64_t>(w.size());
    std::int64_t top = 0;
    for (const auto& [g, n] : bigrams) top = std::max(top, n * static_cast<std::int64_t>(g.size() - 1));
    if (double(top) / double(total) > opt.max_top_bigram_fraction) return "repeated_ngrams";
  }
  return "";
}

std::vector<std::uint64_t> minhash(const std::string& doc, const FilterOptions& opt) {
  const auto words = words_of(doc);
  const std::size_t k =
      std::min<std::size_t>(static_cast<std::size_t>(opt.shingle_words), std::max<std::size_t>(words.size(), 1));
  std::vector<std::uint64_t> shingles;
  for (std::size_t i = 0; i + k <= words.size(); ++i) {
    std::string s = words[i];
    for (std::size_t j = 1; j < k; ++j) s += " " + words[i + j];
    shingles.push_back(hash(s));
  }
  const std::size_t n = static_cast<std::size_t>(opt.minhash_bands * opt.minhash_rows);
  std::vector<std::uint64_t> sig(n, std::numeric_limits<std::uint64_t>::max());
  for (std::uint64_t x : shingles)
    for (std::size_t i = 0; i < n; ++i) sig[i] = std::min(sig[i], mix(x ^ (0x632be59bd9b4e019ull * (i + 1))));
  return sig;
}

bool passes_rules(const std::string& doc, const FilterOptions& opt, FilterReport& r) {
  const std::string why = quality_issue(doc, opt);
  if (why.empty()) return true;
  ++(why == "too_short"        ? r.too_short
     : why == "symbols"        ? r.symbols
     : why == "digits"         ? r.digits
     : why == "repeated_lines" ? r.repeated_lines
                               : r.repeated_ngrams);
  return false;
}

std::uint64_t exact_key(const std::string& doc) { return hash(normalise(doc)); }

std::uint64_t band_key(std::span<const std::uint64_t> sig, std::size_t band, std::size_t rows) {
  return XXH64(sig.data() + band * rows, rows * sizeof(std::uint64_t), band);
}

double similarity(std::span<const std::uint64_t> a, std::span<const std::uint64_t> b) {
  std::size_t same = 0;
  for (std::size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return double(same) / double(a.size());
}

std::vector<std::size_t> filter_documents(const std::vector<std::string>& docs, const FilterOptions& opt,
                                          FilterReport& r) {
  r = FilterReport{};
  r.documents = static_cast<std::int64_t>(docs.size());
  std::vector<std::size_t> kept;
  std::unordered_set<std::uint64_t> exact;
  std::vector<std::vector<std::uint64_t>> signatures;  // of kept documents, for near-duplicate checks
  std::vector<std::unordered_map<std::uint64_t, std::vector<std::size_t>>> buckets(
      static_cast<std::size_t>(opt.minhash_bands));  // band hash -> kept documents (index into signatures)
  const auto rows = static_cast<std::size_t>(opt.minhash_rows);
  for (std::size_t d = 0; d < docs.size(); ++d) {
    if (!passes_rules(docs[d], opt, r)) continue;
    if (opt.dedup && !exact.insert(exact_key(docs[d])).second) {
      ++r.exact_duplicates;
      continue;
    }
    if (opt.near_dup_threshold > 0) {
      auto sig = minhash(docs[d], opt);
      std::vector<std::uint64_t> band_keys;
      bool near = false;
      for (std::size_t b = 0; b < buckets.size() && !near; ++b) {
        const std::uint64_t key = band_key(sig, b, rows);
        band_keys.push_back(key);
        const auto it = buckets[b].find(key);
        if (it == buckets[b].end()) continue;
        for (std::size_t other : it->second)  // estimated Jaccard: the share of equal slots
          if (similarity(sig, signatures[other]) >= opt.near_dup_threshold) {
            near = true;
            break;
          }
      }
      if (near) {
        ++r.near_duplicates;
        continue;
      }
      for (std::size_t b = band_keys.size(); b < buckets.size(); ++b) band_keys.push_back(band_key(sig, b, rows));
      for (std::size_t b = 0; b < buckets.size(); ++b) buckets[b][band_keys[b]].push_back(signatures.size());
      signatures.push_back(std::move(sig));
    }
    kept.push_back(d);
  }
  r.kept = static_cast<std::int64_t>(kept.size());
  return kept;
}

namespace {
// Each count of a report with its key in meta.json's `filters`.
std::vector<std::pair<std::int64_t*, const char*>> counts(FilterReport& r) {
  return {{&r.documents, "documents"},
          {&r.kept, "kept"},
          {&r.exact_duplicates, "exact_duplicates"},
          {&r.near_duplicates, "near_duplicates"},
          {&r.too_short, "too_short"},
          {&r.symbols, "symbols"},
          {&r.digits, "digits"},
          {&r.repeated_lines, "repeated_lines"},
          {&r.repeated_ngrams, "repeated_ngrams"},
          {&r.read.utf8.bytes, "invalid_utf8_bytes_replaced"},
          {&r.read.utf8.repaired, "invalid_utf8_documents_repaired"},
          {&r.read.utf8.dropped, "invalid_utf8_documents_dropped"},
          {&r.read.bad, "bad_records"},
          {&r.read.records, "records"},
          {&r.read.split, "documents_split"},
          {&r.read.split_parts, "split_parts"},
          {&r.low_quality, "low_quality"}};
}
}  // namespace

nlohmann::json FilterReport::json() const {
  nlohmann::json j;
  for (auto [field, key] : counts(const_cast<FilterReport&>(*this))) j[key] = *field;
  j["first_bad_record"] = read.first_bad;
  j["quality_histogram"] = quality_histogram;
  j["quality_model"] = quality_model;
  return j;
}

FilterReport FilterReport::from_json(const nlohmann::json& j) {
  FilterReport r;
  for (auto [field, key] : counts(r)) *field = j.at(key).get<std::int64_t>();
  r.read.first_bad = j.at("first_bad_record").get<std::string>();
  r.quality_histogram = j.at("quality_histogram").get<std::vector<std::int64_t>>();
  r.quality_model = j.at("quality_model").get<std::string>();
  return r;
}

void FilterReport::add(const FilterReport& o) {
  auto mine = counts(*this);
  const auto theirs = counts(const_cast<FilterReport&>(o));
  for (std::size_t i = 0; i < mine.size(); ++i) *mine[i].first += *theirs[i].first;
  if (read.first_bad.empty()) read.first_bad = o.read.first_bad;
  if (quality_histogram.size() < o.quality_histogram.size()) quality_histogram.resize(o.quality_histogram.size());
  for (std::size_t i = 0; i < o.quality_histogram.size(); ++i) quality_histogram[i] += o.quality_histogram[i];
  if (quality_model.empty()) quality_model = o.quality_model;
}

std::string FilterReport::text() const {
  return fmt::format(
             "filters: {} of {} documents kept; removed {} exact and {} near duplicates, {} too short, {} "
             "symbol-heavy, {} digit-heavy, {} with repeated lines, {} with a dominating bigram",
             kept, documents, exact_duplicates, near_duplicates, too_short, symbols, digits, repeated_lines,
             repeated_ngrams) +
         (read.utf8.bytes + read.utf8.dropped == 0
              ? ""
              : fmt::format("; invalid UTF-8: {} bytes replaced by U+FFFD in {} documents, {} documents dropped",
                            read.utf8.bytes, read.utf8.repaired, read.utf8.dropped)) +
         (read.bad == 0 ? "" : fmt::format("; {} bad records skipped (the first: {})", read.bad, read.first_bad)) +
         (read.split == 0 ? ""
                          : fmt::format("; {} documents over data.max_document_bytes cut into {} parts", read.split,
                                        read.split_parts)) +
         (quality_histogram.empty() ? ""
                                    : fmt::format("; quality classifier: {} below the threshold, scores by tenths [{}]",
                                                  low_quality, fmt::join(quality_histogram, " ")));
}

}  // namespace moe::data
