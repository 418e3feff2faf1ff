// The NCCL backend of Communicator: device tensors, one CUDA stream per communicator.
// Built only with CUDA (MOE_WITH_NCCL). Each operation first waits for the default stream
// (where the kernels that made its input run), is enqueued on the communicator's stream and
// waited for before it returns, so callers see the same completion semantics as the MPI
// backend; a started all-to-all (start_all_to_all_v) returns once enqueued and its finish
// waits, so the kernels enqueued between them overlap it. post_send is a
// blocking send here: a GPU pipeline needs its sends and receives grouped (ncclGroupStart)
// before its schedule can run on this backend.
#pragma once
#include <memory>

#include "comm/communicator.h"

namespace moe {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over the ranks of `bootstrap` (any host backend): rank 0 creates NCCL's unique
  // id and broadcasts it; every rank uses the current CUDA device. bootstrap stays the host
  // twin (Communicator::set_host_twin): it must outlive this.
  explicit NcclCommunicator(Communicator& bootstrap);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;
  Device device() const override { return Device::cuda; }
  void barrier() override;

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

 private:
  void enqueue_all_to_all_v(Tensor& out, const Tensor& in, const Split& split);
  struct State;  // ncclComm_t, cudaStream_t: kept out of this header
  std::unique_ptr<State> s_;
};

}  // namespace moe
