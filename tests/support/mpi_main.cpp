// Catch2 runner for tests launched under mpirun: every rank runs the cases, and every rank
// exits non-zero when any rank failed (otherwise mpirun reports only the first to exit).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "parallel/mpi_communicator.h"

int main(int argc, char** argv) {
  moe::MpiSession mpi(&argc, &argv);
  const int failed = Catch::Session().run(argc, argv);
  moe::MpiCommunicator world;
  return world.all_reduce_sum(static_cast<double>(failed)) > 0 ? 1 : 0;
}
