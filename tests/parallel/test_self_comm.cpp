// SelfCommunicator: the group of one every backend must agree with at world size 1.
#include <catch2/catch.hpp>

#include "comm/communicator.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("self communicator: collectives keep the lone rank's data and send no bytes", "[comm]") {
  SelfCommunicator c;
  const Tensor a = random({4, 3}, 5, 1, DType::f32);
  Tensor t = Tensor::empty({4, 3}, DType::f32);
  t.copy_from(a);
  c.all_reduce_sum(t);
  CHECK(max_rel_err(t, a) == 0.0);
  Tensor out = Tensor::zeros({4, 3}, DType::f32);
  c.reduce_scatter_sum(out, a);
  CHECK(max_rel_err(out, a) == 0.0);
  out.zero();
  c.all_gather(out, a);
  CHECK(max_rel_err(out, a) == 0.0);
  out.zero();
  const std::vector<std::int64_t> rows = {4};
  c.all_to_all_v(out, rows, a, rows);
  CHECK(max_rel_err(out, a) == 0.0);
  CHECK(c.all_reduce_sum(1.5) == 1.5);
  for (const auto& [kind, bytes] : c.bytes_sent()) CHECK(bytes == 0u);
  CHECK(c.bytes_sent().size() == 4u);  // every operation counted, each at zero
}

TEST_CASE("self communicator: bad arguments are refused", "[comm]") {
  SelfCommunicator c;
  Tensor t = Tensor::zeros({4}, DType::f32), small = Tensor::zeros({3}, DType::f32);
  CHECK_THROWS_AS(c.send(t, 0, 0), CommError);         // no peer
  CHECK_THROWS_AS(c.broadcast(t, 1), CommError);       // root outside the group
  CHECK_THROWS_AS(c.all_gather(small, t), CommError);  // wrong size
  const std::vector<std::int64_t> rows = {3};
  CHECK_THROWS_AS(c.all_to_all_v(t, rows, t, rows), CommError);  // counts disagree with the tensors
  Tensor bf = Tensor::zeros({4}, DType::bf16);
  CHECK_THROWS_AS(c.all_reduce_sum(bf), CommError);  // bf16 is moved, never summed
}

namespace {
// A backend of one rank that must never be called: the base class answers for it.
class Untouchable final : public Communicator {
 public:
  Device device() const override { return Device::cpu; }
  void barrier() override {}

 protected:
  [[noreturn]] static void called() { throw std::logic_error("a group of one reached its backend"); }
  void do_all_reduce_sum(Tensor&) override { called(); }
  void do_reduce_scatter_sum(Tensor&, const Tensor&) override { called(); }
  void do_all_gather(Tensor&, const Tensor&) override { called(); }
  void do_all_to_all_v(Tensor&, const Tensor&, const Split&) override { called(); }
  int do_start_all_to_all_v(Tensor&, const Tensor&, const Split&) override { called(); }
  void do_send(const Tensor&, int, int) override { called(); }
  void do_recv(Tensor&, int, int) override { called(); }
  void do_broadcast(Tensor&, int) override { called(); }
};
}  // namespace

TEST_CASE("a group of one never calls its backend: no launch and wait for nothing", "[comm]") {
  Untouchable c;
  const Tensor a = random({4, 3}, 6, 1, DType::f32);
  Tensor t = Tensor::empty({4, 3}, DType::f32), out = Tensor::zeros({4, 3}, DType::f32);
  t.copy_from(a);
  c.all_reduce_sum(t);
  c.broadcast(t, 0);
  CHECK(max_rel_err(t, a) == 0.0);
  c.reduce_scatter_sum(out, a);
  CHECK(max_rel_err(out, a) == 0.0);
  out.zero();
  c.all_gather(out, a);
  CHECK(max_rel_err(out, a) == 0.0);
  const std::vector<std::int64_t> rows = {4};
  out.zero();
  c.all_to_all_v(out, rows, a, rows);
  CHECK(max_rel_err(out, a) == 0.0);
  out.zero();
  PendingExchange e = c.start_all_to_all_v(out, rows, a, rows);
  e.finish();
  CHECK(max_rel_err(out, a) == 0.0);
  CHECK(c.all_reduce_sum(2.5) == 2.5);
}
