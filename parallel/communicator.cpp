#include "parallel/communicator.h"

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
    default: throw CommError(fmt::format("all_reduce_sum: unsupported dtype {}", dtype_name(t.dtype())));
  }
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

Communicator::Communicator(MPI_Comm comm) : comm_(comm) {
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

void Communicator::all_reduce_sum(Tensor& t) {
  MOE_CHECK(t.device() == Device::cpu, CommError, "all_reduce_sum: the MPI backend takes host tensors, got {}",
            t.describe());
  check(MPI_Allreduce(MPI_IN_PLACE, t.raw(), static_cast<int>(t.numel()), mpi_type(t), MPI_SUM, comm_),
        "MPI_Allreduce");
  // Counted as a ring all-reduce, the bandwidth-optimal algorithm: 2 (p-1)/p of the buffer.
  bytes_["all_reduce"] += size_ > 1 ? 2 * (size_ - 1) * t.nbytes() / static_cast<std::uint64_t>(size_) : 0;
}

double Communicator::all_reduce_sum(double x) {
  Tensor t = Tensor::empty({1}, DType::f64);
  t.data<double>()[0] = x;
  all_reduce_sum(t);
  return t.data<double>()[0];
}

void Communicator::barrier() { check(MPI_Barrier(comm_), "MPI_Barrier"); }

}  // namespace moe
