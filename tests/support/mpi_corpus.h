// Prepared data for the multi-rank training tests: rank 0 writes the synthetic corpus
// (support/corpus.h) and prepares it into `dir`, the other ranks wait for it.
#pragma once
#include <string>

#include "comm/communicator.h"

namespace moe::testing {

// dir + ".txt" written and prepared into dir (vocabulary 300, micro_moe's); returns dir.
std::string prepared_corpus(Communicator& world, const std::string& dir);

}  // namespace moe::testing
