// The vectorisable f32 exp used by softmax, cross-entropy and SwiGLU against std::exp.
#include <catch2/catch.hpp>
#include <cmath>

#include "kernels/cpu/exp.h"

TEST_CASE("fast_exp is within 2e-7 relative of exp over the float range", "[ops][exp]") {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0007f) {
    const double e = std::exp(double(x));
    worst = std::max(worst, std::abs(double(moe::cpu::fast_exp(x)) - e) / e);
  }
  CHECK(worst < 2e-7);
  CHECK(moe::cpu::fast_exp(0.0f) == 1.0f);
  CHECK(moe::cpu::fast_exp(-1000.0f) < 1e-37f);  // clamped, not NaN or negative
  CHECK(std::isfinite(moe::cpu::fast_exp(1000.0f)));
}
