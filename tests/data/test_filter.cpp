// Data quality filters on synthetic corpora with known duplicates, near duplicates and junk:
// exact duplicates all found; near duplicates against the true Jaccard similarity of their
// shingles (computed here exactly), with recall and precision printed and bounded; each
// heuristic rule on a document made to break it, and ordinary documents untouched.
#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "data/filter.h"
#include "data/prepare.h"
#include "data/tokenizer.h"

using namespace moe::data;

namespace {

std::vector<std::string> vocabulary(std::size_t n, std::mt19937& rng) {
  std::vector<std::string> v;
  std::uniform_int_distribution<int> len(3, 9), ch('a', 'z');
  for (std::size_t i = 0; i < n; ++i) {
    std::string w;
    for (int k = len(rng); k > 0; --k) w.push_back(static_cast<char>(ch(rng)));
    v.push_back(w);
  }
  return v;
}

std::vector<std::string> random_words(std::size_t n, const std::vector<std::string>& vocab, std::mt19937& rng) {
  std::vector<std::string> w(n);
  std::uniform_int_distribution<std::size_t> pick(0, vocab.size() - 1);
  for (auto& x : w) x = vocab[pick(rng)];
  return w;
}

std::string join(const std::vector<std::string>& w) {
  std::string s;
  for (std::size_t i = 0; i < w.size(); ++i) s += (i ? (i % 12 == 0 ? "\n" : " ") : "") + w[i];
  return s;
}

// The exact Jaccard similarity of two documents' 5-word shingle sets.
double jaccard(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  auto shingles = [](const std::vector<std::string>& w) {
    std::set<std::string> s;
    for (std::size_t i = 0; i + 5 <= w.size(); ++i)
      s.insert(w[i] + " " + w[i + 1] + " " + w[i + 2] + " " + w[i + 3] + " " + w[i + 4]);
    return s;
  };
  const auto x = shingles(a), y = shingles(b);
  std::vector<std::string> common;
  std::set_intersection(x.begin(), x.end(), y.begin(), y.end(), std::back_inserter(common));
  return double(common.size()) / double(x.size() + y.size() - common.size());
}

}  // namespace

TEST_CASE("filters: exact duplicates (case and spacing aside) are removed, first copies kept", "[data]") {
  std::mt19937 rng(1);
  const auto vocab = vocabulary(3000, rng);
  std::vector<std::string> docs;
  for (int i = 0; i < 200; ++i) docs.push_back(join(random_words(60 + static_cast<std::size_t>(i % 60), vocab, rng)));
  for (int i = 0; i < 40; ++i) {
    std::string copy = docs[static_cast<std::size_t>(i * 5)];
    std::transform(copy.begin(), copy.end(), copy.begin(),
                   [](char c) { return c == ' ' ? '\t' : static_cast<char>(std::toupper(c)); });
    docs.push_back("  " + copy + "\n\n");
  }
  FilterReport r;
  const auto kept = filter_documents(docs, FilterOptions{}, r);
  CHECK(r.exact_duplicates == 40);
  CHECK(r.near_duplicates == 0);
  REQUIRE(kept.size() == 200);
  for (std::size_t i = 0; i < kept.size(); ++i) CHECK(kept[i] == i);
}

TEST_CASE("filters: near duplicates found by MinHash LSH against the true Jaccard similarity", "[data]") {
  std::mt19937 rng(2);
  const auto vocab = vocabulary(5000, rng);
  std::vector<std::vector<std::string>> base;
  for (int i = 0; i < 200; ++i) base.push_back(random_words(120, vocab, rng));
  std::vector<std::vector<std::string>> all = base;
  std::vector<std::size_t> source;  // the base document each variant comes from
  // Variants with k words replaced: 1-2 give Jaccard ~0.85-0.92, 6-20 give ~0.2-0.6.
  std::uniform_int_distribution<std::size_t> pos(0, 119), pick(0, vocab.size() - 1);
  for (int i = 0; i < 200; ++i) {
    const std::size_t b = static_cast<std::size_t>(i);
    auto v = base[b];
    const int k = i % 2 == 0 ? 1 + i % 4 / 2 : 6 + i % 15;
    for (int j = 0; j < k; ++j) v[pos(rng)] = vocab[pick(rng)];
    all.push_back(v);
    source.push_back(b);
  }
  std::vector<std::string> docs;
  for (const auto& w : all) docs.push_back(join(w));
  FilterOptions opt;  // threshold 0.8
  FilterReport r;
  const auto kept = filter_documents(docs, opt, r);
  const std::set<std::size_t> keep(kept.begin(), kept.end());
  int tp = 0, fp = 0, fn = 0;
  for (std::size_t i = 0; i < source.size(); ++i) {
    const bool duplicate = jaccard(all[200 + i], base[source[i]]) >= opt.near_dup_threshold;
    const bool removed = keep.count(200 + i) == 0;
    tp += duplicate && removed, fp += !duplicate && removed, fn += duplicate && !removed;
  }
  const double recall = double(tp) / double(tp + fn), precision = double(tp) / double(std::max(1, tp + fp));
  std::printf("near duplicates at Jaccard >= %.2f: %d true, recall %.3f, precision %.3f\n", opt.near_dup_threshold,
              tp + fn, recall, precision);
  CHECK(tp + fn >= 50);                         // the corpus has positives...
  CHECK(int(source.size()) - (tp + fn) >= 50);  // ...and negatives
  CHECK(recall >= 0.9);
  CHECK(precision >= 0.95);
  for (std::size_t i = 0; i < 200; ++i) CHECK(keep.count(i) == 1);  // the first copy stays
  CHECK(r.near_duplicates == tp + fp);
}

TEST_CASE("filters: each quality rule on a document made to break it", "[data]") {
  const FilterOptions opt;
  std::mt19937 rng(3);
  const auto vocab = vocabulary(2000, rng);
  const std::string ordinary = join(random_words(150, vocab, rng));
  CHECK(quality_issue(ordinary, opt).empty());
  CHECK(quality_issue("Brevity.", opt) == "too_short");
  CHECK(quality_issue("#### !!!! $$$$ %%%% &&&& **** words", opt) == "symbols");
  CHECK(quality_issue("call 0123 4567 8910 now 5555 1234", opt) == "digits");
  CHECK(quality_issue("buy now\nbuy now\nbuy now\nreally\nbuy now\n", opt) == "repeated_lines");
  std::string spam;
  for (int i = 0; i < 60; ++i) spam += "cheap pills " + vocab[static_cast<std::size_t>(i)] + " ";
  CHECK(quality_issue(spam, opt) == "repeated_ngrams");
  // Each rule off: the document passes it.
  FilterOptions off = opt;
  off.min_words = 0, off.max_symbol_fraction = off.max_digit_fraction = off.max_repeated_line_fraction = 1;
  off.max_top_bigram_fraction = 1;
  for (const std::string& d : {std::string("Brevity."), std::string("#### !!!! $$$$ words"), spam})
    CHECK(quality_issue(d, off).empty());
  // In a corpus: the counts by reason.
  FilterReport r;
  const auto kept = filter_documents({ordinary, "Brevity.", "0123 4567 8910 1234 5678", spam}, opt, r);
  CHECK(kept == std::vector<std::size_t>{0});
  CHECK((r.too_short == 1 && r.digits == 1 && r.repeated_ngrams == 1 && r.kept == 1));
}

TEST_CASE("prepare: out-of-core deduplication over files keeps exactly what filter_documents keeps", "[data]") {
  // Near-duplicate chains (each link 2 words from the last: A~B and B~C, but A and C further
  // apart), exact copies re-cased, and junk, spread over 6 files so copies sit in earlier and
  // later files than their originals. The in-memory filter over the same documents in the
  // same order is the oracle: the same counts, and the kept documents' tokens are the shards'.
  std::mt19937 rng(4);
  const auto vocab = vocabulary(4000, rng);
  std::uniform_int_distribution<std::size_t> pos(0, 99), pick(0, vocab.size() - 1);
  std::vector<std::string> docs;
  for (int chain = 0; chain < 60; ++chain) {
    auto w = random_words(100, vocab, rng);
    for (int link = 0; link < 4; ++link) {
      docs.push_back(join(w));
      for (int j = 0; j < 2 + chain % 3; ++j) w[pos(rng)] = vocab[pick(rng)];
    }
  }
  for (int i = 0; i < 30; ++i) {
    std::string copy = docs[std::size_t(i * 7)];
    std::transform(copy.begin(), copy.end(), copy.begin(), [](char c) { return char(std::toupper(c)); });
    docs.push_back(copy);
  }
  docs.push_back("Brevity.");
  std::shuffle(docs.begin(), docs.end(), rng);
  std::filesystem::create_directories("dedup_files");
  for (std::size_t f = 0; f < 6; ++f) {
    std::ofstream out(fmt::format("dedup_files/{}.txt", f));
    for (std::size_t i = f; i < docs.size(); i += 6) out << docs[i] << "\n%\n";
  }
  const auto read = read_documents("dedup_files");
  FilterReport oracle;
  const auto kept = filter_documents(read, FilterOptions{}, oracle);
  const auto rep =
      prepare({.corpus = "dedup_files", .out_dir = "dedup_out", .vocab_size = 500, .val_fraction = 0.1, .seed = 1});
  CHECK(oracle.near_duplicates >= 40);
  CHECK(oracle.exact_duplicates == 30);
  CHECK(rep.filters.exact_duplicates == oracle.exact_duplicates);
  CHECK(rep.filters.near_duplicates == oracle.near_duplicates);
  CHECK(rep.filters.too_short == oracle.too_short);
  CHECK(rep.documents == std::int64_t(kept.size()));
  const Tokenizer tok(Tokenizer::in_dir("dedup_out"));
  std::uint64_t tokens = 0;
  for (std::size_t i : kept) tokens += tok.encode(read[i]).size() + 1;
  CHECK(rep.train_tokens + rep.val_tokens == tokens);
}
