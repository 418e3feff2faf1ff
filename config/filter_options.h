// moe data prepare's quality filters (data/filter.h applies them; keys data.dedup,
// data.min_words, ... in config/config.cpp).
#pragma once
#include <cstdint>
#include <string>

namespace moe::data {

// What moe data prepare does with text that is not valid UTF-8 (data.invalid_utf8): each
// byte outside a valid sequence becomes U+FFFD, the document is dropped, or the preparation
// stops naming the file and the byte.
enum class InvalidUtf8 { replace, drop, refuse };

struct FilterOptions {
  InvalidUtf8 invalid_utf8 = InvalidUtf8::replace;
  std::string text_field = "text";  // JSONL corpora: the field holding a record's text
  double max_bad_fraction = 0;      // of records that may be bad (skipped, counted) before reading stops
  // A longer document is cut at line ends (else spaces) into parts of at most this many bytes,
  // each a document: what one document costs in memory (the tokenizer's lattice, the
  // filters' counts) stays bounded whatever the input.
  std::int64_t max_document_bytes = std::int64_t{1} << 20;
  bool dedup = true;                // exact duplicates after normalisation
  double near_dup_threshold = 0.8;  // estimated Jaccard of word shingles at which a document is a near copy (0: off)
  int shingle_words = 5;            // words per shingle (shorter documents: all their words)
  int minhash_bands = 16, minhash_rows = 8;  // signature of bands x rows hashes; LSH on bands
  std::int64_t min_words = 2;                // fewer: dropped (0: off)
  double max_symbol_fraction = 0.25;         // of non-space characters that are neither letters nor digits (1: off)
  double max_digit_fraction = 0.25;          // of non-space characters that are digits (1: off)
  double max_repeated_line_fraction = 0.3;   // of lines that repeat an earlier line of the document (1: off)
  double max_top_bigram_fraction =
      0.2;  // of characters covered by the most frequent word bigram, for >= 100 words (1: off)
  // A fastText quality classifier (data/quality.h): trained from quality_train (labelled
  // lines) or read from quality_model ("" both: off); documents whose probability of
  // quality_label is below quality_threshold are left out.
  std::string quality_model = {}, quality_train = {};
  std::string quality_label = "__label__hq";
  double quality_threshold = 0.5;
};

}  // namespace moe::data
