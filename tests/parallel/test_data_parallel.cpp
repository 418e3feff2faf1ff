// Run under mpirun (ctest does): each rank computes the gradient of its slice of a batch;
// the all-reduced sum must equal the full-batch gradient computed on one rank.
#include <catch2/catch.hpp>

#include "kernels/ops.h"
#include "parallel/mpi_communicator.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// Gradient of sum_n CE(x_n W^T, t_n) / N_total w.r.t. W, over rows [begin, begin+count).
Tensor grad_of_rows(const Tensor& x, const Tensor& w, const Tensor& targets, std::int64_t begin, std::int64_t count,
                    std::int64_t total) {
  const std::int64_t V = w.size(0);
  Tensor xs = x.rows(begin, count), ts = targets.rows(begin, count);
  Tensor logits = Tensor::empty({count, V}, DType::f64), dlogits = Tensor::empty({count, V}, DType::f64);
  Tensor dl = Tensor::empty({count}, DType::f64), dw = Tensor::zeros(w.shape(), DType::f64), none;
  for (std::int64_t i = 0; i < count; ++i) dl.data<double>()[i] = 1.0 / double(total);
  ops::matmul_forward(logits, xs, w);
  ops::cross_entropy_backward(dlogits, dl, logits, ts);
  ops::matmul_backward(none, dw, dlogits, xs, w);
  return dw;
}
}  // namespace

TEST_CASE("data parallel: all-reduced slice gradients equal the full-batch gradient", "[mpi]") {
  MpiCommunicator world;
  REQUIRE(world.size() >= 2);  // a single process would not test anything
  const std::int64_t per_rank = 3, N = per_rank * world.size(), C = 5, V = 7;
  // Same seeds on every rank: every rank holds the same full batch and weights.
  Tensor x = random({N, C}, 1), w = random({V, C}, 2), targets = random_ints({N}, 3, 0, V - 1);
  Tensor mine = grad_of_rows(x, w, targets, world.rank() * per_rank, per_rank, N);
  world.all_reduce_sum(mine);
  Tensor full = grad_of_rows(x, w, targets, 0, N, N);
  CHECK(max_rel_err(mine, full) < 1e-12);
  // Bytes counted as a ring all-reduce: 2 (p-1)/p of the buffer.
  CHECK(world.bytes_sent().at("all_reduce") == 2 * (world.size() - 1) * mine.nbytes() / world.size());
}
