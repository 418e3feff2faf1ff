// StepGuard: which steps are skipped (non-finite, spikes), against values computed by hand.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "trainer/step_guard.h"

using namespace moe;
using V = StepGuard::Verdict;

TEST_CASE("step guard: non-finite loss or gradient norm skips, and counts in a row", "[trainer]") {
  StepGuard g(0, 10);
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  CHECK(g.check(2.0, 1.0) == V::apply);
  CHECK(g.check(nan, 1.0) == V::nonfinite);
  CHECK(g.check(2.0, inf) == V::nonfinite);
  CHECK(g.consecutive() == 2);
  CHECK(g.check(2.0, 1.0) == V::apply);
  CHECK(g.consecutive() == 0);
  CHECK(g.skipped() == 2);
  CHECK(g.check(1e30, 1.0) == V::apply);  // no spike check at zscore 0
}

TEST_CASE("step guard: a loss z standard deviations above the window's mean is a spike", "[trainer]") {
  StepGuard g(3.0, 4);
  // Until 4 steps are applied there is no threshold.
  for (double l : {1.0, 3.0, 1.0}) CHECK(g.check(l, 1.0) == V::apply);
  CHECK(std::isinf(g.threshold()));
  CHECK(g.check(3.0, 1.0) == V::apply);
  // Window {1, 3, 1, 3}: mean 2, population std 1, threshold 2 + 3 * 1 = 5.
  CHECK(g.threshold() == 5.0);
  CHECK(g.check(5.5, 1.0) == V::spike);
  CHECK(g.threshold() == 5.0);  // a skipped loss does not enter the window
  CHECK(g.check(4.5, 1.0) == V::apply);
  // Window {3, 1, 3, 4.5}: mean 2.875, std sqrt(1.546875), threshold 2.875 + 3 * 1.24373...
  CHECK(g.threshold() == Approx(2.875 + 3 * std::sqrt(1.546875)));
}
