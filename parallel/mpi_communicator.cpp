#include "parallel/mpi_communicator.h"

#include <exception>

namespace moe {
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw CommError(fmt::format("{} failed: {}", what, std::string(msg, static_cast<std::size_t>(len))));
}

MPI_Datatype mpi_type(const Tensor& t) {
  switch (t.dtype()) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::bf16: return MPI_UINT16_T;  // moved, never reduced
    case DType::e4m3:
    case DType::e5m2: return MPI_UINT8_T;
  }
  throw CommError("MPI: unsupported dtype");
}

// Counts fit MPI's int arguments; larger buffers must be split by the caller.
int as_int(std::int64_t n, const char* op) {
  MOE_CHECK(n >= 0 && n <= INT32_MAX, CommError, "{}: {} elements exceed one MPI call", op, n);
  return static_cast<int>(n);
}
void to_ints(std::vector<int>& out, const std::vector<std::int64_t>& v, const char* op) {
  out.resize(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = as_int(v[i], op);
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int provided = 0;
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  // Errors come back as return codes (turned into CommError) instead of aborting inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

MpiSession::~MpiSession() {
  if (std::uncaught_exceptions() == 0) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, Device tensors) : comm_(comm), tensors_(tensors) {
  MOE_CHECK(!runs_cuda(tensors), CommError, "MPI backend: GPU tensors go through NCCL (parallel/nccl_communicator.h)");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  // Sends still in flight at teardown (an exception unwinding a step, before MPI_Abort): MPI
  // may still read their buffers, so those are kept alive on purpose; waiting could hang on a
  // peer that is gone.
  if (pending_.empty()) return;
  for (MPI_Request& r : pending_) MPI_Request_free(&r);
  new std::vector<Tensor>(std::move(pending_data_));  // deliberately never freed
}

void MpiCommunicator::do_all_reduce_sum(Tensor& t) {
  check(MPI_Allreduce(MPI_IN_PLACE, t.raw(), as_int(t.numel(), "all_reduce_sum"), mpi_type(t), MPI_SUM, comm_),
        "MPI_Allreduce");
}

void MpiCommunicator::do_reduce_scatter_sum(Tensor& out, const Tensor& in) {
  check(MPI_Reduce_scatter_block(in.raw(), out.raw(), as_int(out.numel(), "reduce_scatter_sum"), mpi_type(in), MPI_SUM,
                                 comm_),
        "MPI_Reduce_scatter_block");
}

void MpiCommunicator::do_all_gather(Tensor& out, const Tensor& in) {
  const int n = as_int(in.numel(), "all_gather");
  check(MPI_Allgather(in.raw(), n, mpi_type(in), out.raw(), n, mpi_type(out), comm_), "MPI_Allgather");
}

namespace {
template <class Split>  // Communicator::Split
void split_ints(std::vector<int> (&ints)[4], const Split& s, const char* op) {
  to_ints(ints[0], s.send_count, op), to_ints(ints[1], s.send_offset, op), to_ints(ints[2], s.recv_count, op),
      to_ints(ints[3], s.recv_offset, op);
}
}  // namespace

void MpiCommunicator::do_all_to_all_v(Tensor& out, const Tensor& in, const Split& s) {
  split_ints(ints_, s, "all_to_all_v");
  const auto& [sc, sd, rc, rd] = ints_;
  const MPI_Datatype type = mpi_type(in);
  check(MPI_Alltoallv(in.raw(), sc.data(), sd.data(), type, out.raw(), rc.data(), rd.data(), type, comm_),
        "MPI_Alltoallv");
}

int MpiCommunicator::do_start_all_to_all_v(Tensor& out, const Tensor& in, const Split& s) {
  Started fresh;
  split_ints(fresh.ints, s, "start_all_to_all_v");
  const int handle = next_handle_++;
  Started& st = started_[handle] = std::move(fresh);  // the vectors' buffers move with them
  const auto& [sc, sd, rc, rd] = st.ints;
  const MPI_Datatype type = mpi_type(in);
  const int started =
      MPI_Ialltoallv(in.raw(), sc.data(), sd.data(), type, out.raw(), rc.data(), rd.data(), type, comm_, &st.request);
  if (started != MPI_SUCCESS) started_.erase(handle);
  check(started, "MPI_Ialltoallv");
  return handle;
}

void MpiCommunicator::do_finish(int handle) {
  const auto it = started_.find(handle);
  if (it == started_.end()) return;
  const int rc = MPI_Wait(&it->second.request, MPI_STATUS_IGNORE);
  started_.erase(it);  // its counts were read until now
  check(rc, "MPI_Wait");
}

void MpiCommunicator::do_send(const Tensor& t, int peer, int tag) {
  check(MPI_Send(t.raw(), as_int(t.numel(), "send"), mpi_type(t), peer, tag, comm_), "MPI_Send");
}

void MpiCommunicator::do_recv(Tensor& t, int peer, int tag) {
  check(MPI_Recv(t.raw(), as_int(t.numel(), "recv"), mpi_type(t), peer, tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
}

std::pair<int, int> MpiCommunicator::node_place() const {
  MPI_Comm node;
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank(), MPI_INFO_NULL, &node), "MPI_Comm_split_type");
  int r = 0, n = 1;
  MPI_Comm_rank(node, &r);
  MPI_Comm_size(node, &n);
  MPI_Comm_free(&node);
  return {r, n};
}

void MpiCommunicator::do_post_send(const Tensor& t, int peer, int tag) {
  reap_sends(false);  // drop what has been delivered, so a long schedule holds only what is in flight
  MPI_Request r;
  check(MPI_Isend(t.raw(), as_int(t.numel(), "post_send"), mpi_type(t), peer, tag, comm_, &r), "MPI_Isend");
  pending_.push_back(r), pending_data_.push_back(t);
}

void MpiCommunicator::do_wait_sends() { reap_sends(true); }

void MpiCommunicator::reap_sends(bool all) {
  if (pending_.empty()) return;
  if (all) {
    check(MPI_Waitall(static_cast<int>(pending_.size()), pending_.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
    pending_.clear(), pending_data_.clear();
    return;
  }
  for (std::size_t i = 0; i < pending_.size();) {
    int done = 0;
    check(MPI_Test(&pending_[i], &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (!done) {
      ++i;
      continue;
    }
    pending_.erase(pending_.begin() + std::ptrdiff_t(i));
    pending_data_.erase(pending_data_.begin() + std::ptrdiff_t(i));
  }
}

void MpiCommunicator::do_broadcast(Tensor& t, int root) {
  check(MPI_Bcast(t.raw(), as_int(t.numel(), "broadcast"), mpi_type(t), root, comm_), "MPI_Bcast");
}

void MpiCommunicator::barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

}  // namespace moe
