// The MPI backend of Communicator (host tensors) and the process-wide MPI lifetime.
#pragma once
#include <mpi.h>

#include <map>
#include <utility>
#include <vector>

#include "comm/communicator.h"

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

// tensors: the device whose tensors it moves, the host's, or the sim device's (host memory
// behind residency checks, kernels/device.h: the sim run's stand-in for NCCL).
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, Device tensors = Device::cpu);
  ~MpiCommunicator() override;
  // This rank's index among the group's ranks on its node (collective): which GPU it takes;
  // and how many of them share the node (the launcher's ranks per node).
  int node_rank() const { return node_place().first; }
  int node_size() const { return node_place().second; }
  Device device() const override { return tensors_; }
  // Host tensors always; sim tensors only on a sim backend (a host backend stages them, as it
  // would a GPU's: the copies are counted).
  bool takes(Device d) const override { return d == tensors_ || d == Device::cpu; }
  void barrier() override;
  MPI_Comm comm() const { return comm_; }
  std::pair<int, int> node_place() const;  // (node_rank, node_size), one collective

 protected:
  void do_all_reduce_sum(Tensor& t) override;
  void do_reduce_scatter_sum(Tensor& out, const Tensor& in) override;
  void do_all_gather(Tensor& out, const Tensor& in) override;
  void do_all_to_all_v(Tensor& out, const Tensor& in, const Split& split) override;
  int do_start_all_to_all_v(Tensor& out, const Tensor& in, const Split& split) override;
  void do_finish(int handle) override;
  void do_send(const Tensor& t, int peer, int tag) override;
  void do_recv(Tensor& t, int peer, int tag) override;
  void do_broadcast(Tensor& t, int root) override;
  void do_post_send(const Tensor& t, int peer, int tag) override;
  void do_wait_sends() override;

 private:
  void reap_sends(bool all);
  MPI_Comm comm_;
  Device tensors_;
  std::vector<MPI_Request> pending_;  // posted sends, and the tensors they read from
  std::vector<Tensor> pending_data_;
  std::vector<int> ints_[4];  // all_to_all_v's counts and displacements as MPI ints, reused
  struct Started {            // an MPI_Ialltoallv reads its counts until it completes
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<int> ints[4];
  };
  std::map<int, Started> started_;
  int next_handle_ = 0;
};

}  // namespace moe
