// Data quality filters for `moe data prepare` (docs/DATA.md): exact deduplication (a hash of
// the normalised text), near-duplicate removal (MinHash signatures of word shingles, banded
// LSH for candidates, kept when the estimated Jaccard similarity is below the threshold) and
// heuristic quality rules in the spirit of Gopher's (Rae et al. 2021, appendix A): too few
// words, too many symbols or digits, repeated lines, one n-gram dominating. Deterministic:
// documents are taken in corpus order and a later copy is the one removed.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/filter_options.h"
#include "data/corpus.h"

namespace moe::data {

struct FilterReport {
  std::int64_t documents = 0, kept = 0;
  std::int64_t exact_duplicates = 0, near_duplicates = 0;
  std::int64_t too_short = 0, symbols = 0, digits = 0, repeated_lines = 0, repeated_ngrams = 0;
  // The quality classifier (data/quality.h), after the rules and deduplication: documents
  // below the threshold, and the scores of all it scored in tenths (empty: no classifier).
  std::int64_t low_quality = 0;
  std::vector<std::int64_t> quality_histogram;
  std::string quality_model;
  // What reading met (data/corpus.h): invalid UTF-8 replaced or dropped (dropped documents
  // are counted in `documents`, as read), and bad records skipped.
  ReadReport read;
  nlohmann::json json() const;  // (meta.json's `filters`)
  static FilterReport from_json(const nlohmann::json& j);
  void add(const FilterReport& other);  // counts summed (the first bad record: this one's, else other's)
  std::string text() const;             // one line
};

// Lower case, runs of whitespace as one space, trimmed: what exact deduplication compares.
std::string normalise(const std::string& doc);
// The first rule a document fails ("too_short", "symbols", ...), or "" when it passes.
std::string quality_issue(const std::string& doc, const FilterOptions& opt);
// MinHash signature (bands x rows values) of a document's word shingles.
std::vector<std::uint64_t> minhash(const std::string& doc, const FilterOptions& opt);
// Whether a document passes the rules (quality_issue); counts the rule it fails.
bool passes_rules(const std::string& doc, const FilterOptions& opt, FilterReport& report);
// What exact deduplication compares: the XXH64 of the normalised text.
std::uint64_t exact_key(const std::string& doc);
// The LSH key of one band of a MinHash signature (its `rows` values).
std::uint64_t band_key(std::span<const std::uint64_t> sig, std::size_t band, std::size_t rows);
// The estimated Jaccard similarity of two signatures: the share of equal slots.
double similarity(std::span<const std::uint64_t> a, std::span<const std::uint64_t> b);
// Indices of the documents kept, in order, and the counts of what was removed and why.
std::vector<std::size_t> filter_documents(const std::vector<std::string>& docs, const FilterOptions& opt,
                                          FilterReport& report);

}  // namespace moe::data
