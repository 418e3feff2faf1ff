#include "tests/support/mpi_corpus.h"

#include "data/prepare.h"
#include "tests/support/corpus.h"

namespace moe::testing {

std::string prepared_corpus(Communicator& world, const std::string& dir) {
  if (world.rank() == 0) {
    write_corpus(dir + ".txt", 300);
    data::prepare({.corpus = dir + ".txt", .out_dir = dir, .vocab_size = 300, .val_fraction = 0.1, .seed = 3});
  }
  world.barrier();
  return dir;
}

}  // namespace moe::testing
