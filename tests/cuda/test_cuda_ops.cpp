// gpu-labelled: CUDA ops against the CPU reference. Without a GPU (or a CUDA build) the
// program prints why and exits 77, which ctest reports as "Skipped".
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <iostream>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

TEST_CASE("cuda swiglu_forward matches the CPU reference within 2 ulp-ish (1e-6 relative)", "[gpu][swiglu]") {
  for (std::int64_t n : {1, 255, 256, 257, 1 << 20}) {
    Tensor g = random({n}, 1, 6, DType::f32), u = random({n}, 2, 1, DType::f32), ref = Tensor::empty({n}, DType::f32);
    ops::swiglu_forward(ref, g, u);
    Tensor gd = g.to(Device::cuda), ud = u.to(Device::cuda), hd = Tensor::empty({n}, DType::f32, Device::cuda);
    ops::swiglu_forward(hd, gd, ud);
    CHECK(max_rel_err(hd.to(Device::cpu), ref) < 1e-6);
  }
}

TEST_CASE("cuda tensors round-trip through device memory", "[gpu][tensor]") {
  Tensor a = random({3, 1000}, 3, 1, DType::f32);
  Tensor back = a.to(Device::cuda).to(Device::cpu);
  CHECK(max_rel_err(back, a) == 0.0);
}

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::cout << "SKIPPED: " << (built_with_cuda() ? "no CUDA device visible" : "built without CUDA") << "\n";
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
