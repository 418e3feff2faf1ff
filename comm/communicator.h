// Communicator: one interface for the collectives of a group of ranks, with backends.
//   MpiCommunicator   host tensors, runs everywhere (CI uses it)
//   NcclCommunicator  device tensors (parallel/nccl_communicator.h, CUDA builds only)
//   SelfCommunicator  a group of one process, no library: world size 1 without mpirun
// Each backend also takes tensors on the other device, through a copy on its own (a host
// backend's GPU tensors go through the host: correct everywhere; NCCL is their fast path).
//
// The public operations validate their arguments and count the bytes this rank sends, per
// kind, under the algorithm the counter names (ring for all-reduce / reduce-scatter /
// all-gather, exact per-peer bytes for all-to-all-v and send, a flat tree for broadcast), so
// logs and tests compare traffic with the analytic minimum the same way for every backend.
// Backends implement the check-free do_* hooks; a group of one never reaches them (its
// collectives are the identity or a copy: no NCCL launch and wait on a one-GPU run).
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe {

// What this process is inside right now, for the watchdog (trainer/watchdog.h): the
// operation and the label of its communicator ("dp", "ep", ...), or null between operations;
// and when an operation last completed (steady clock, seconds).
struct CommActivity {
  const char* op = nullptr;
  const char* label = nullptr;
  double last_completed = 0;
};
CommActivity comm_activity();

class Communicator;

// A started all_to_all_v (Communicator::start_all_to_all_v): its output is valid, and its
// input free, once finish() returned. Move-only; finish it before it goes out of scope.
class PendingExchange {
 public:
  PendingExchange() = default;
  PendingExchange(PendingExchange&& o) noexcept { *this = std::move(o); }
  PendingExchange& operator=(PendingExchange&& o) noexcept {
    std::swap(comm_, o.comm_), std::swap(handle_, o.handle_), std::swap(posted_, o.posted_);
    std::swap(keep_, o.keep_);
    return *this;
  }
  ~PendingExchange();
  bool pending() const { return comm_ != nullptr; }
  void finish();

 private:
  friend class Communicator;
  Communicator* comm_ = nullptr;
  int handle_ = -1;    // the backend's (-1: nothing left to wait for but the link delay)
  double posted_ = 0;  // steady clock, seconds
  Tensor keep_[2];     // in and out, alive until finished
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int size() const { return size_; }
  // Where this backend's tensors must live.
  virtual Device device() const = 0;
  // Whether it moves tensors on `d` itself; others go through a copy on device() or, for
  // host tensors where a host twin is set, through the twin.
  virtual bool takes(Device d) const { return d == device(); }
  // A host backend over the same ranks in the same order (a device backend's bootstrap): host
  // tensors and scalars (routing counts, norms) go through it instead of a round trip through
  // device memory and a wait for it.
  void set_host_twin(Communicator* twin) { host_twin_ = twin; }

  // In place: every rank ends with the element-wise sum over ranks.
  void all_reduce_sum(Tensor& t);
  // in (p*n, ...) summed over ranks; rank r keeps rows [r*n, (r+1)*n) in out (n, ...).
  void reduce_scatter_sum(Tensor& out, const Tensor& in);
  // out (p*n, ...) = the in (n, ...) of every rank, in rank order.
  void all_gather(Tensor& out, const Tensor& in);
  // Rows of dim 0: rank sends send_rows[j] consecutive rows of in to rank j (in rank order)
  // and receives recv_rows[j] rows from rank j into out, in rank order.
  void all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                    std::span<const std::int64_t> send_rows);
  // The same, started: this rank may compute until the returned exchange's finish() (the
  // MoE layer runs its shared experts meanwhile). A backend without a non-blocking exchange,
  // or tensors staged through the host, complete it here.
  PendingExchange start_all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                                     std::span<const std::int64_t> send_rows);
  void send(const Tensor& t, int peer, int tag);
  void recv(Tensor& t, int peer, int tag);
  // A send that returns at once; t is kept until it is delivered. Messages to one peer with
  // one tag arrive in the order they were posted. wait_sends() returns when all have been.
  // (Pipeline schedules: a stage never blocks on handing its output on.)
  void post_send(const Tensor& t, int peer, int tag);
  void wait_sends();
  void broadcast(Tensor& t, int root);
  virtual void barrier() = 0;

  // Root's text on every rank (two broadcasts: the length, then the bytes).
  std::string broadcast_text(const std::string& text, int root);

  // Sum of a scalar over ranks (through all_reduce_sum on a host tensor; device backends
  // stage it).
  double all_reduce_sum(double x);

  // Bytes this rank sent, per operation kind used so far, e.g. {"all_reduce": 4096}.
  std::map<std::string, std::uint64_t> bytes_sent() const;
  void reset_bytes();
  // Wall seconds this rank spent inside operations (transfer and waiting for peers): the
  // cost report's communication time.
  double seconds() const { return seconds_; }
  // Seconds between starting exchanges and asking for their end: the time this rank computed
  // while they travelled (the overlap, an upper bound of what it hid).
  double overlapped_seconds() const { return overlapped_; }
  // Fault drill and benchmark: a slow link. Every all_to_all_v completes no sooner than this
  // long after it was posted (a started one counts from its start).
  void set_link_delay(double seconds) { link_delay_ = seconds; }
  // A name for messages (the mesh names its axes).
  void set_label(std::string label) { label_ = std::move(label); }
  const std::string& label() const { return label_; }

 protected:
  // Element offsets and counts per peer for all_to_all_v, validated by the caller.
  struct Split {
    std::vector<std::int64_t> send_count, send_offset, recv_count, recv_offset;
  };
  virtual void do_all_reduce_sum(Tensor& t) = 0;
  virtual void do_reduce_scatter_sum(Tensor& out, const Tensor& in) = 0;
  virtual void do_all_gather(Tensor& out, const Tensor& in) = 0;
  virtual void do_all_to_all_v(Tensor& out, const Tensor& in, const Split& split) = 0;
  // A started exchange's handle for do_finish (default: done at once, -1).
  virtual int do_start_all_to_all_v(Tensor& out, const Tensor& in, const Split& split) {
    do_all_to_all_v(out, in, split);
    return -1;
  }
  virtual void do_finish(int /*handle*/) {}
  virtual void do_send(const Tensor& t, int peer, int tag) = 0;
  virtual void do_recv(Tensor& t, int peer, int tag) = 0;
  // Default: a blocking send (backends without a non-blocking one).
  virtual void do_post_send(const Tensor& t, int peer, int tag) { do_send(t, peer, tag); }
  virtual void do_wait_sends() {}
  virtual void do_broadcast(Tensor& t, int root) = 0;
  int rank_ = 0, size_ = 1;

 private:
  void expect_here(const char* op, const Tensor& t) const;
  // A tensor on another device than this backend's goes through a copy on this one (host
  // backends take GPU tensors, the NCCL backend host tensors such as routing metadata).
  bool staged(const Tensor& t) const;
  Tensor here(const Tensor& t) const;  // t, or its copy on device()
  // The host twin, where every defined tensor given is a host tensor this backend does not take.
  Communicator* twin_for(std::initializer_list<const Tensor*> ts) const;
  Communicator* host_twin_ = nullptr;
  void expect_peer(const char* op, int peer) const;
  friend class PendingExchange;
  void finish(PendingExchange& e);
  void abandon(PendingExchange& e);  // unwinding: its buffers kept for the transfer, never waited for
  std::vector<Tensor> abandoned_;
  double overlap_counted_until_ = 0;
  // all_to_all_v's checks and counts into split_; returns the bytes to other ranks.
  std::uint64_t split_rows(const char* op, Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                           std::span<const std::int64_t> send_rows);
  void sleep_until_delivered(double posted) const;
  void keep_own_rows(Tensor& out, const Tensor& in);  // all_to_all_v in a group of one
  void send_to(const char* op, const Tensor& t, int peer, int tag, bool post);
  // Counters by kind in a fixed array: counting must cost nothing next to a small message.
  enum Kind { kAllReduce, kReduceScatter, kAllGather, kAllToAll, kSend, kBroadcast, kKinds };
  void count(Kind kind, std::uint64_t bytes) { bytes_[kind] += bytes, used_[kind] = true; }
  struct Timer;  // adds the lifetime of one operation to seconds_, and publishes it as comm_activity()
  double seconds_ = 0, overlapped_ = 0, link_delay_ = 0;
  std::string label_ = "world";
  std::uint64_t bytes_[kKinds] = {};
  bool used_[kKinds] = {};
  Split split_;  // reused by all_to_all_v: no allocation per call
};

// A group of one: every collective is the identity (or a copy); bytes sent are zero.
class SelfCommunicator final : public Communicator {
 public:
  Device device() const override { return Device::cpu; }
  void barrier() override {}

 protected:
  void do_all_reduce_sum(Tensor&) override {}
  void do_reduce_scatter_sum(Tensor& out, const Tensor& in) override { out.copy_from(in.view(out.shape())); }
  void do_all_gather(Tensor& out, const Tensor& in) override { out.copy_from(in.view(out.shape())); }
  void do_all_to_all_v(Tensor& out, const Tensor& in, const Split&) override {
    if (in.numel() > 0) out.copy_from(in.view(out.shape()));
  }
  void do_send(const Tensor&, int, int) override;
  void do_recv(Tensor&, int, int) override;
  void do_broadcast(Tensor&, int) override {}
};

}  // namespace moe
