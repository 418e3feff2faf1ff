// Communicator: one interface for the collectives of a group of ranks, with backends.
// MpiCommunicator works on host tensors and runs everywhere (CI uses it); the NCCL backend
// (device tensors) implements the same interface.
//
// Every operation counts the bytes this rank sends, per kind, under the algorithm the
// counter names (ring for all-reduce / reduce-scatter / all-gather, exact per-peer bytes for
// all-to-all-v and send, a flat tree for broadcast), so that logs and tests can compare
// traffic with the analytic minimum.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <map>
#include <span>
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
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }

  // In place: every rank ends with the element-wise sum over ranks.
  virtual void all_reduce_sum(Tensor& t) = 0;
  // in (p*n, ...) summed over ranks; rank r keeps rows [r*n, (r+1)*n) in out (n, ...).
  virtual void reduce_scatter_sum(Tensor& out, const Tensor& in) = 0;
  // out (p*n, ...) = the in (n, ...) of every rank, in rank order.
  virtual void all_gather(Tensor& out, const Tensor& in) = 0;
  // Rows of dim 0: rank sends send_rows[j] consecutive rows of in to rank j (in rank order)
  // and receives recv_rows[j] rows from rank j into out, in rank order.
  virtual void all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                            std::span<const std::int64_t> send_rows) = 0;
  virtual void send(const Tensor& t, int peer, int tag) = 0;
  virtual void recv(Tensor& t, int peer, int tag) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  // Sum of a scalar over ranks (through all_reduce_sum).
  double all_reduce_sum(double x);

  // Bytes this rank sent, per operation kind, e.g. {"all_reduce": 4096}.
  const std::map<std::string, std::uint64_t>& bytes_sent() const { return bytes_; }

 protected:
  void count(const char* kind, std::uint64_t bytes) { bytes_[kind] += bytes; }
  int rank_ = 0, size_ = 1;

 private:
  std::map<std::string, std::uint64_t> bytes_;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  void all_reduce_sum(Tensor& t) override;
  using Communicator::all_reduce_sum;
  void reduce_scatter_sum(Tensor& out, const Tensor& in) override;
  void all_gather(Tensor& out, const Tensor& in) override;
  void all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                    std::span<const std::int64_t> send_rows) override;
  void send(const Tensor& t, int peer, int tag) override;
  void recv(Tensor& t, int peer, int tag) override;
  void broadcast(Tensor& t, int root) override;
  void barrier() override;
  MPI_Comm comm() const { return comm_; }

 private:
  MPI_Comm comm_;
};

}  // namespace moe
