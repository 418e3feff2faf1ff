// A small synthetic corpus for tests that need prepared data: varied words so that a
// SentencePiece vocabulary of a few hundred pieces can be trained from it.
#pragma once
#include <string>
#include <vector>

namespace moe::testing {

// Writes `docs` fortune-style documents ("%"-separated) to path.
void write_corpus(const std::string& path, int docs, unsigned seed = 1);

// The model.* overrides of the micro MoE the training tests run (vocabulary 300 for a corpus
// above, 3 blocks of width 16, the first dense, 8 experts top-2, balance loss and bias on),
// then `more` (later keys win).
std::vector<std::string> micro_moe(std::vector<std::string> more = {});

}  // namespace moe::testing
