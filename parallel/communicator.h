// Communicator: collectives over one group of ranks, counting the bytes each kind sends.
// This first version has the MPI backend on host tensors (runs everywhere; CI uses it); the
// NCCL backend and the remaining operations arrive with the parallelism issue.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <map>
#include <string>

#include "kernels/tensor.h"

namespace moe {

// Owns MPI's lifetime for a process: MPI_Init_thread on construction, MPI_Finalize on
// destruction (skipped when the process is unwinding from an error: mpirun then sees the
// non-zero exit of main and stops the job).
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

class Communicator {
 public:
  explicit Communicator(MPI_Comm comm = MPI_COMM_WORLD);
  int rank() const { return rank_; }
  int size() const { return size_; }

  // In place: every rank ends with the element-wise sum over ranks. f32, f64 or i32, host.
  void all_reduce_sum(Tensor& t);
  double all_reduce_sum(double x);
  void barrier();

  // Bytes this rank handed to each kind of operation, e.g. {"all_reduce": 4096}.
  const std::map<std::string, std::uint64_t>& bytes_sent() const { return bytes_; }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::map<std::string, std::uint64_t> bytes_;
};

}  // namespace moe
