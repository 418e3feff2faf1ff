// gpu-labelled: the NCCL backend at world size 1 (one GPU), bootstrapped by SelfCommunicator.
// Each collective against what a group of one must produce, on f32, f64, i32 and bf16 rows,
// and the backend's refusal of host tensors. Multi-rank behaviour shares the validation and
// byte counting of the MPI backend, which the mpi-labelled tests cover.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <iostream>

#include "parallel/nccl_communicator.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
NcclCommunicator& nccl() {
  static SelfCommunicator self;
  static NcclCommunicator c(self);
  return c;
}
Tensor dev(const Tensor& t) { return t.to(Device::cuda); }
Tensor host(const Tensor& t) { return t.to(Device::cpu); }
}  // namespace

TEST_CASE("nccl: a group of one GPU", "[gpu][nccl]") {
  NcclCommunicator& c = nccl();
  REQUIRE(c.size() == 1);
  REQUIRE(c.rank() == 0);
}

TEST_CASE("nccl: all-reduce, reduce-scatter, all-gather and broadcast keep a lone rank's data", "[gpu][nccl]") {
  NcclCommunicator& c = nccl();
  for (DType dt : {DType::f32, DType::f64}) {
    const Tensor a = random({7, 33}, 11, 1, dt);
    Tensor d = dev(a);
    c.all_reduce_sum(d);
    CHECK(max_rel_err(host(d), a) == 0.0);
    Tensor rs = Tensor::empty({7, 33}, dt, Device::cuda), ag = Tensor::empty({7, 33}, dt, Device::cuda);
    c.reduce_scatter_sum(rs, dev(a));
    CHECK(max_rel_err(host(rs), a) == 0.0);
    c.all_gather(ag, dev(a));
    CHECK(max_rel_err(host(ag), a) == 0.0);
    Tensor b = dev(a);
    c.broadcast(b, 0);
    CHECK(max_rel_err(host(b), a) == 0.0);
  }
  CHECK(c.all_reduce_sum(2.5) == 2.5);
  c.barrier();
}

TEST_CASE("nccl: all-to-all-v moves bf16 rows to self, empty sends allowed", "[gpu][nccl]") {
  NcclCommunicator& c = nccl();
  Tensor in = Tensor::empty({5, 8}, DType::bf16);
  auto* p = in.data<bf16>();
  for (std::int64_t i = 0; i < in.numel(); ++i) p[i].bits = static_cast<std::uint16_t>(0x3f80 + i);
  Tensor out = Tensor::zeros({5, 8}, DType::bf16, Device::cuda);
  const std::vector<std::int64_t> rows = {5};
  c.all_to_all_v(out, rows, dev(in), rows);
  const Tensor back = host(out);
  for (std::int64_t i = 0; i < in.numel(); ++i) CHECK(back.data<bf16>()[i].bits == p[i].bits);
  Tensor none = Tensor::empty({0, 8}, DType::bf16, Device::cuda),
         none2 = Tensor::empty({0, 8}, DType::bf16, Device::cuda);
  const std::vector<std::int64_t> zero = {0};
  c.all_to_all_v(none2, zero, none, zero);
  CHECK(c.bytes_sent().at("all_to_all") == 0u);  // nothing leaves a group of one
}

TEST_CASE("nccl: host tensors (the MoE routing metadata) go by the host twin and stay on the host", "[gpu][nccl]") {
  NcclCommunicator& c = nccl();
  Tensor h = Tensor::empty({5, 6}, DType::f32), out = Tensor::zeros({5, 6}, DType::f32);
  for (std::int64_t i = 0; i < h.numel(); ++i) h.data<float>()[i] = float(i) - 7.5f;
  const std::vector<std::int64_t> rows = {5};
  c.all_to_all_v(out, rows, h, rows);
  CHECK(out.device() == Device::cpu);
  for (std::int64_t i = 0; i < h.numel(); ++i) CHECK(out.data<float>()[i] == h.data<float>()[i]);
  c.all_reduce_sum(h);  // a sum over one rank: unchanged, and back on the host
  CHECK(h.data<float>()[3] == -4.5f);
}

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::cout << "SKIPPED: " << (built_with_cuda() ? "no CUDA device visible" : "built without CUDA") << "\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
