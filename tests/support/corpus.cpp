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

std::vector<std::string> micro_moe(std::vector<std::string> more) {
  std::vector<std::string> kv = {"model.vocab_size=300",
                                 "model.seq_len=8",
                                 "model.d_model=16",
                                 "model.n_heads=2",
                                 "model.n_kv_heads=1",
                                 "model.ffn_hidden=24",
                                 "model.expert_hidden=8",
                                 "model.routed_experts=8",
                                 "model.top_k=2",
                                 "model.n_layers=3",
                                 "model.dense_layers=1",
                                 "model.aux_loss_coef=0.01",
                                 "model.bias_update_rate=0.01"};
  kv.insert(kv.end(), more.begin(), more.end());
  return kv;
}

}  // namespace moe::testing
