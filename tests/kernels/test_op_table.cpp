// The op table (tests/kernels/op_table.h) on the CPU: every row in f32 against f64, and on
// the sim device against the CPU bit for bit (tests/cuda/test_cuda_ops.cpp runs it on a GPU).
#include <catch2/catch.hpp>

#include "tests/kernels/op_table.h"

using namespace moe;
using namespace moe::testing;

namespace {
void compare(const std::vector<Tensor>& got, const std::vector<Tensor>& want, double tol) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("output " << i << ": " << got[i].describe() << " against " << want[i].describe());
    if (tol == 0) CHECK((got[i].dtype() == want[i].dtype() && same_bits(got[i], want[i])));
    else CHECK(norm_err(got[i], want[i]) <= tol);
  }
}
}  // namespace

TEST_CASE("op table: every op in f32 within its tolerance of f64", "[ops][table]") {
  int rows = 0;
  for (const OpCase& c : op_cases()) {
    if (!c.real) continue;
    INFO(c.name);
    compare(c.run(DType::f32, Device::cpu), c.run(DType::f64, Device::cpu), c.f32_tol);
    ++rows;
  }
  CHECK(rows >= 12);
}

TEST_CASE("op table: every op on the sim device is the CPU's bit for bit", "[ops][table][sim]") {
  for (const OpCase& c : op_cases()) {
    INFO(c.name);
    compare(c.run(DType::f32, Device::sim), c.run(DType::f32, Device::cpu), 0);
  }
}
