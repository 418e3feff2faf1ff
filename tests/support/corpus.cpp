#include "tests/support/corpus.h"

#include <fstream>
#include <random>
#include <vector>

namespace moe::testing {

void write_corpus(const std::string& path, int docs, unsigned seed) {
  static const std::vector<std::string> words = {
      "the",     "expert", "router",  "token",  "model", "gradient", "sparse",  "mixture",  "of",
      "experts", "learns", "quickly", "slowly", "and",   "a",        "cluster", "pipeline", "tensor",
      "rank",    "loss",   "falls",   "rises",  "while", "every",    "batch",   "sequence", "attention",
      "head",    "layer",  "norm",    "weight", "decay", "step",     "warm",    "cosine"};
  std::mt19937 rng(seed);
  std::ofstream out(path);
  for (int d = 0; d < docs; ++d) {
    const int n = 5 + static_cast<int>(rng() % 20);
    for (int i = 0; i < n; ++i) out << words[rng() % words.size()] << (rng() % 7 == 0 ? ".\n" : " ");
    out << (d % 10) << (d % 3) << "\n%\n";
  }
}

}  // namespace moe::testing
