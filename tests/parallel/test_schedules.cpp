// The schedules' unit lists (comm/pipeline.h) and their ideal spans against closed forms:
// 1F1B idles (p-1)(F+B); DualPipeV, its F&B pairs run as one, idles the DualPipe
// repository's (PP/2-1)(F&B + B - 3W) with PP = 2p and F&B = F + B; apart, less. The
// measured bubbles under mpirun: tests/parallel/test_pipeline.cpp.
#include <catch2/catch.hpp>

#include <map>

#include "comm/pipeline.h"
#include "kernels/error.h"

using namespace moe;

namespace {
std::vector<std::vector<PipeUnit>> all_stages(int p, std::int64_t m, bool v) {
  std::vector<std::vector<PipeUnit>> out;
  for (int s = 0; s < p; ++s) out.push_back(v ? schedule_dualpipev(p, s, m) : schedule_1f1b(p, s, m));
  return out;
}
}  // namespace

TEST_CASE("schedules: the ideal spans are the closed forms", "[pipeline]") {
  for (int p : {2, 3, 4, 8})
    for (std::int64_t m : {std::int64_t(2 * p), std::int64_t(3 * p + 1)}) {
      INFO(p << " stages, " << m << " micro-batches");
      const double f = 1, bi = 1, w = 1, b = bi + w;
      const double one = schedule_span({p, 1}, all_stages(p, m, false), f, b, bi, w, false);
      CHECK(one - double(m) * (f + b) == Approx(double(p - 1) * (f + b)));
      const auto v = all_stages(p, m, true);
      const double paired = schedule_span({p, 2, true}, v, f, b, bi, w, true);
      CHECK(paired - double(2 * m) * (f + b) == Approx(double(p - 1) * ((f + b) + b - 3 * w)));
      CHECK(1 - double(2 * m) * (f + b) / paired == Approx(dualpipev_bubble_fraction(p, m, true)));
      const double apart = schedule_span({p, 2, true}, v, f, b, bi, w, false);
      CHECK(apart < paired);
    }
}

TEST_CASE("schedules: DualPipeV runs each unit once, a split backward's weights after it", "[pipeline]") {
  for (int p : {2, 3, 5})
    for (std::int64_t m : {std::int64_t(2 * p), std::int64_t(4 * p + 3)})
      for (int s = 0; s < p; ++s) {
        INFO("stage " << s << " of " << p << ", " << m << " micro-batches");
        std::map<std::tuple<int, std::int64_t, int>, int> seen;  // (pass, micro-batch, chunk)
        for (const PipeUnit& u : schedule_dualpipev(p, s, m)) {
          if (u.pass == Pass::weights) CHECK(seen[{int(Pass::inputs), u.micro_batch, u.chunk}] == 1);
          if (u.pass == Pass::backward || u.pass == Pass::inputs)
            CHECK(seen[{int(Pass::forward), u.micro_batch, u.chunk}] == 1);
          ++seen[{int(u.pass), u.micro_batch, u.chunk}];
        }
        for (std::int64_t i = 0; i < m; ++i)
          for (int c = 0; c < 2; ++c) {
            CHECK(seen[{int(Pass::forward), i, c}] == 1);
            const int split = seen[{int(Pass::inputs), i, c}];
            CHECK(seen[{int(Pass::backward), i, c}] + split == 1);
            CHECK(seen[{int(Pass::weights), i, c}] == split);
          }
      }
  CHECK_THROWS_AS(schedule_dualpipev(4, 0, 7), ConfigError);
}
