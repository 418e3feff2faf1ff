#include "parallel/communicator.h"

#include <exception>
#include <numeric>
#include <vector>

namespace moe {
namespace {

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  throw CommError(fmt::format("{} failed: {}", what, std::string(msg, static_cast<std::size_t>(len))));
}

MPI_Datatype mpi_type(const char* op, const Tensor& t) {
  MOE_CHECK(t.device() == Device::cpu, CommError, "{}: the MPI backend takes host tensors, got {}", op, t.describe());
  switch (t.dtype()) {
    case DType::f32: return MPI_FLOAT;
    case DType::f64: return MPI_DOUBLE;
    case DType::i32: return MPI_INT32_T;
    case DType::bf16: return MPI_UINT16_T;  // moved, never reduced
    case DType::e4m3: case DType::e5m2: return MPI_UINT8_T;
  }
  throw CommError(fmt::format("{}: unsupported dtype", op));
}

// Counts fit MPI's int arguments; larger buffers must be split by the caller.
int as_int(std::int64_t n, const char* op) {
  MOE_CHECK(n >= 0 && n <= INT32_MAX, CommError, "{}: {} elements exceed one MPI call", op, n);
  return static_cast<int>(n);
}

// Elements per row of dim 0 (1 for a 1-D tensor).
std::int64_t row_elems(const Tensor& t) { return t.ndim() == 0 || t.size(0) == 0 ? 0 : t.numel() / t.size(0); }

// The reduced dtypes: moving bf16/fp8 bits is fine, summing them is not.
void check_reducible(const char* op, const Tensor& t) {
  MOE_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64 || t.dtype() == DType::i32, CommError,
            "{}: cannot sum {} tensors", op, dtype_name(t.dtype()));
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

double Communicator::all_reduce_sum(double x) {
  Tensor t = Tensor::empty({1}, DType::f64);
  t.data<double>()[0] = x;
  all_reduce_sum(t);
  return t.data<double>()[0];
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) : comm_(comm) {
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

void MpiCommunicator::all_reduce_sum(Tensor& t) {
  const char* op = "all_reduce_sum";
  check_reducible(op, t);
  check(MPI_Allreduce(MPI_IN_PLACE, t.raw(), as_int(t.numel(), op), mpi_type(op, t), MPI_SUM, comm_), "MPI_Allreduce");
  count("all_reduce", 2 * static_cast<std::uint64_t>(size_ - 1) * t.nbytes() / static_cast<std::uint64_t>(size_));
}

void MpiCommunicator::reduce_scatter_sum(Tensor& out, const Tensor& in) {
  const char* op = "reduce_scatter_sum";
  check_reducible(op, in);
  MOE_CHECK(in.numel() == out.numel() * size_ && in.dtype() == out.dtype(), CommError,
            "{}: in {} must hold {} x out {}", op, in.describe(), size_, out.describe());
  check(MPI_Reduce_scatter_block(in.raw(), out.raw(), as_int(out.numel(), op), mpi_type(op, in), MPI_SUM, comm_),
        "MPI_Reduce_scatter_block");
  count("reduce_scatter", static_cast<std::uint64_t>(size_ - 1) * out.nbytes());
}

void MpiCommunicator::all_gather(Tensor& out, const Tensor& in) {
  const char* op = "all_gather";
  MOE_CHECK(out.numel() == in.numel() * size_ && in.dtype() == out.dtype(), CommError,
            "{}: out {} must hold {} x in {}", op, out.describe(), size_, in.describe());
  const int n = as_int(in.numel(), op);
  check(MPI_Allgather(in.raw(), n, mpi_type(op, in), out.raw(), n, mpi_type(op, out), comm_), "MPI_Allgather");
  count("all_gather", static_cast<std::uint64_t>(size_ - 1) * in.nbytes());
}

void MpiCommunicator::all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                                   std::span<const std::int64_t> send_rows) {
  const char* op = "all_to_all_v";
  const auto p = static_cast<std::size_t>(size_);
  MOE_CHECK(send_rows.size() == p && recv_rows.size() == p, CommError, "{}: {} send and {} receive counts for {} ranks",
            op, send_rows.size(), recv_rows.size(), p);
  MOE_CHECK(in.dtype() == out.dtype() && (in.numel() == 0 || out.numel() == 0 || row_elems(in) == row_elems(out)),
            CommError, "{}: in {} and out {} differ in dtype or row size", op, in.describe(), out.describe());
  const std::int64_t row = in.numel() > 0 ? row_elems(in) : row_elems(out);
  const auto sent = std::accumulate(send_rows.begin(), send_rows.end(), std::int64_t{0});
  const auto got = std::accumulate(recv_rows.begin(), recv_rows.end(), std::int64_t{0});
  MOE_CHECK(sent == (in.ndim() ? in.size(0) : 0) && got == (out.ndim() ? out.size(0) : 0), CommError,
            "{}: counts send {} / receive {} rows, tensors hold {} / {}", op, sent, got, in.ndim() ? in.size(0) : 0,
            out.ndim() ? out.size(0) : 0);
  std::vector<int> sc(p), sd(p), rc(p), rd(p);
  std::int64_t so = 0, ro = 0;
  std::uint64_t bytes = 0;
  for (std::size_t j = 0; j < p; ++j) {
    sc[j] = as_int(send_rows[j] * row, op), sd[j] = as_int(so, op), so += send_rows[j] * row;
    rc[j] = as_int(recv_rows[j] * row, op), rd[j] = as_int(ro, op), ro += recv_rows[j] * row;
    if (static_cast<int>(j) != rank_) bytes += static_cast<std::uint64_t>(sc[j]) * dtype_size(in.dtype());
  }
  const MPI_Datatype type = mpi_type(op, in);
  check(MPI_Alltoallv(in.raw(), sc.data(), sd.data(), type, out.raw(), rc.data(), rd.data(), type, comm_),
        "MPI_Alltoallv");
  count("all_to_all", bytes);  // exact: rows handed to other ranks
}

void MpiCommunicator::send(const Tensor& t, int peer, int tag) {
  const char* op = "send";
  check(MPI_Send(t.raw(), as_int(t.numel(), op), mpi_type(op, t), peer, tag, comm_), "MPI_Send");
  count("send", t.nbytes());
}

void MpiCommunicator::recv(Tensor& t, int peer, int tag) {
  const char* op = "recv";
  check(MPI_Recv(t.raw(), as_int(t.numel(), op), mpi_type(op, t), peer, tag, comm_, MPI_STATUS_IGNORE), "MPI_Recv");
}

void MpiCommunicator::broadcast(Tensor& t, int root) {
  const char* op = "broadcast";
  check(MPI_Bcast(t.raw(), as_int(t.numel(), op), mpi_type(op, t), root, comm_), "MPI_Bcast");
  if (rank_ == root) count("broadcast", static_cast<std::uint64_t>(size_ - 1) * t.nbytes());
}

void MpiCommunicator::barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

}  // namespace moe
