// A small synthetic corpus for tests that need prepared data: varied words so that a
// SentencePiece vocabulary of a few hundred pieces can be trained from it.
#pragma once
#include <string>

namespace moe::testing {

// Writes `docs` fortune-style documents ("%"-separated) to path.
void write_corpus(const std::string& path, int docs, unsigned seed = 1);

}  // namespace moe::testing
