// Our Communicator::all_to_all_v against MPI_Alltoallv called directly on the same buffers
// and counts, in one run under mpirun: the overhead of validation, offset building and byte
// counting. Sizes sweep rows per peer x row width (floats); rounds alternate the two so that
// drift in a noisy machine hits both; each reports its best of 15 rounds.
// Usage: mpirun -np P build/bench/bench_all_to_all [reps]
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "parallel/mpi_communicator.h"

using namespace moe;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  const int p = world.size(), r = world.rank();
  const int reps = argc > 1 ? std::stoi(argv[1]) : 200;
  if (r == 0)
    std::printf("bench all_to_all_v: %d ranks, best of 15 rounds x %d calls\n%8s %6s %10s %12s %12s %8s\n", p, reps,
                "rows/peer", "width", "bytes/rank", "MPI us", "moe us", "ratio");
  double worst = 0;
  for (const std::int64_t rows : {16, 256, 2048})
    for (const std::int64_t width : {64, 1024}) {
      // Uneven counts, as routing makes them: rank r sends rows*(1 + (r+j)%3)/2 to rank j.
      std::vector<std::int64_t> send(p), recv(p);
      for (int j = 0; j < p; ++j) send[j] = rows * (1 + (r + j) % 3) / 2, recv[j] = rows * (1 + (j + r) % 3) / 2;
      std::int64_t ns = 0, nr = 0;
      for (int j = 0; j < p; ++j) ns += send[j], nr += recv[j];
      Tensor in = Tensor::zeros({ns, width}, DType::f32), out = Tensor::zeros({nr, width}, DType::f32);
      std::vector<int> sc(p), sd(p), rc(p), rd(p);
      for (int j = 0, so = 0, ro = 0; j < p; ++j) {
        sc[j] = int(send[j] * width), sd[j] = so, so += sc[j];
        rc[j] = int(recv[j] * width), rd[j] = ro, ro += rc[j];
      }
      double best_mpi = 1e30, best_moe = 1e30;
      for (int round = 0; round < 15; ++round) {
        world.barrier();
        double t0 = now();
        for (int i = 0; i < reps; ++i)
          MPI_Alltoallv(in.raw(), sc.data(), sd.data(), MPI_FLOAT, out.raw(), rc.data(), rd.data(), MPI_FLOAT,
                        world.comm());
        best_mpi = std::min(best_mpi, world.all_reduce_sum(now() - t0) / p / reps);
        world.barrier();
        t0 = now();
        for (int i = 0; i < reps; ++i) world.all_to_all_v(out, recv, in, send);
        best_moe = std::min(best_moe, world.all_reduce_sum(now() - t0) / p / reps);
      }
      worst = std::max(worst, best_moe / best_mpi);
      if (r == 0)
        std::printf("%8lld %6lld %10lld %12.2f %12.2f %8.3f\n", static_cast<long long>(rows),
                    static_cast<long long>(width), static_cast<long long>(ns * width * 4), best_mpi * 1e6,
                    best_moe * 1e6, best_moe / best_mpi);
    }
  if (r == 0) std::printf("worst ratio %.3f (target < 1.05)\n", worst);
  return 0;
}
