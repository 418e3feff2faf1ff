#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

namespace moe {
namespace {

void check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw CommError(fmt::format("{} failed: {}", what, ncclGetErrorString(rc)));
}
void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw DeviceError(fmt::format("{} failed: {}", what, cudaGetErrorString(rc)));
}

// NCCL moves bytes for the types it cannot reduce (bf16 as a 16-bit payload, fp8 as bytes).
ncclDataType_t nccl_type(DType d) {
  switch (d) {
    case DType::f32: return ncclFloat32;
    case DType::f64: return ncclFloat64;
    case DType::i32: return ncclInt32;
    case DType::bf16: return ncclBfloat16;
    case DType::e4m3:
    case DType::e5m2: return ncclUint8;
  }
  throw CommError("NCCL: unsupported dtype");
}

std::size_t n(std::int64_t x) { return static_cast<std::size_t>(x); }

}  // namespace

struct NcclCommunicator::State {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  // Both are host waits on the device, counted like synchronize() (kernels/residency.h).
  void sync(const char* op) const {
    moe::detail::count_wait();
    check(cudaStreamSynchronize(stream), op);
  }
  // The kernels that made an operation's input run on the default stream, which this
  // (non-blocking) stream does not wait for by itself.
  void ready(const char* op) const {
    moe::detail::count_wait();
    check(cudaStreamSynchronize(cudaStreamLegacy), op);
  }
};

NcclCommunicator::NcclCommunicator(Communicator& bootstrap) : s_(std::make_unique<State>()) {
  MOE_CHECK(bootstrap.device() == Device::cpu, CommError, "NCCL bootstrap: needs a host communicator");
  rank_ = bootstrap.rank(), size_ = bootstrap.size();
  set_host_twin(&bootstrap);  // host tensors and scalars go by MPI
  ncclUniqueId id;
  static_assert(sizeof(id) % sizeof(std::int32_t) == 0);
  Tensor buf = Tensor::zeros({static_cast<std::int64_t>(sizeof(id) / sizeof(std::int32_t))}, DType::i32);
  if (rank_ == 0) {
    check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    std::memcpy(buf.raw(), &id, sizeof(id));
  }
  bootstrap.broadcast(buf, 0);
  std::memcpy(&id, buf.raw(), sizeof(id));
  check(cudaStreamCreateWithFlags(&s_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  try {
    check(ncclCommInitRank(&s_->comm, size_, id, rank_), "ncclCommInitRank");
  } catch (...) {  // the destructor does not run for a throwing constructor
    cudaStreamDestroy(s_->stream);
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  if (s_->comm) ncclCommDestroy(s_->comm);
  if (s_->stream) cudaStreamDestroy(s_->stream);
}

void NcclCommunicator::do_all_reduce_sum(Tensor& t) {
  s_->ready("all_reduce_sum");
  check(ncclAllReduce(t.raw(), t.raw(), n(t.numel()), nccl_type(t.dtype()), ncclSum, s_->comm, s_->stream),
        "ncclAllReduce");
  s_->sync("all_reduce_sum");
}

void NcclCommunicator::do_reduce_scatter_sum(Tensor& out, const Tensor& in) {
  s_->ready("reduce_scatter_sum");
  check(ncclReduceScatter(in.raw(), out.raw(), n(out.numel()), nccl_type(in.dtype()), ncclSum, s_->comm, s_->stream),
        "ncclReduceScatter");
  s_->sync("reduce_scatter_sum");
}

void NcclCommunicator::do_all_gather(Tensor& out, const Tensor& in) {
  s_->ready("all_gather");
  check(ncclAllGather(in.raw(), out.raw(), n(in.numel()), nccl_type(in.dtype()), s_->comm, s_->stream),
        "ncclAllGather");
  s_->sync("all_gather");
}

void NcclCommunicator::do_all_to_all_v(Tensor& out, const Tensor& in, const Split& sp) {
  enqueue_all_to_all_v(out, in, sp);
  s_->sync("all_to_all_v");
}

// Started: enqueued on this communicator's stream, which runs beside the default stream's
// kernels (the shared experts') until finish waits for it.
int NcclCommunicator::do_start_all_to_all_v(Tensor& out, const Tensor& in, const Split& sp) {
  enqueue_all_to_all_v(out, in, sp);
  return 0;
}

void NcclCommunicator::do_finish(int /*handle*/) { s_->sync("finish_all_to_all_v"); }

// Point-to-point pairs inside one group: NCCL schedules them together, so no ordering of
// sends and receives can deadlock. The rank's own rows are a device copy.
void NcclCommunicator::enqueue_all_to_all_v(Tensor& out, const Tensor& in, const Split& sp) {
  s_->ready("all_to_all_v");
  const ncclDataType_t type = nccl_type(in.dtype());
  const std::size_t esz = dtype_size(in.dtype());
  const auto* src = static_cast<const std::byte*>(in.raw());
  auto* dst = static_cast<std::byte*>(out.raw());
  const auto me = n(rank_);
  if (sp.send_count[me] > 0)
    check(cudaMemcpyAsync(dst + n(sp.recv_offset[me]) * esz, src + n(sp.send_offset[me]) * esz,
                          n(sp.send_count[me]) * esz, cudaMemcpyDeviceToDevice, s_->stream),
          "cudaMemcpyAsync");
  check(ncclGroupStart(), "ncclGroupStart");
  for (int j = 0; j < size_; ++j) {
    if (j == rank_) continue;
    const auto k = n(j);
    if (sp.send_count[k] > 0)
      check(ncclSend(src + n(sp.send_offset[k]) * esz, n(sp.send_count[k]), type, j, s_->comm, s_->stream), "ncclSend");
    if (sp.recv_count[k] > 0)
      check(ncclRecv(dst + n(sp.recv_offset[k]) * esz, n(sp.recv_count[k]), type, j, s_->comm, s_->stream), "ncclRecv");
  }
  check(ncclGroupEnd(), "ncclGroupEnd");
}

// NCCL has no tags: messages between a pair of ranks arrive in the order they were posted,
// which is the only ordering the callers (pipeline stages) rely on.
void NcclCommunicator::do_send(const Tensor& t, int peer, int) {
  s_->ready("send");
  check(ncclSend(t.raw(), n(t.numel()), nccl_type(t.dtype()), peer, s_->comm, s_->stream), "ncclSend");
  s_->sync("send");
}

void NcclCommunicator::do_recv(Tensor& t, int peer, int) {
  s_->ready("recv");
  check(ncclRecv(t.raw(), n(t.numel()), nccl_type(t.dtype()), peer, s_->comm, s_->stream), "ncclRecv");
  s_->sync("recv");
}

void NcclCommunicator::do_broadcast(Tensor& t, int root) {
  s_->ready("broadcast");
  check(ncclBroadcast(t.raw(), t.raw(), n(t.numel()), nccl_type(t.dtype()), root, s_->comm, s_->stream),
        "ncclBroadcast");
  s_->sync("broadcast");
}

// NCCL has no barrier: an all-reduce of one integer that every rank must join.
void NcclCommunicator::barrier() {
  Tensor one = Tensor::zeros({1}, DType::i32, Device::cuda);
  do_all_reduce_sum(one);
}

}  // namespace moe
