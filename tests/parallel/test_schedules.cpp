// The schedules' unit lists (comm/pipeline.h) and their ideal spans against closed forms:
// 1F1B idles (p-1)(F+B); DualPipeV, its F&B pairs run as one, idles the DualPipe
// repository's (PP/2-1)(F&B + B - 3W) with PP = 2p and F&B = F + B; apart, less. The
// measured bubbles under mpirun: tests/parallel/test_pipeline.cpp.
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "comm/pipeline.h"
#include "kernels/error.h"

#include <fmt/format.h>

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

TEST_CASE("schedules: DualPipeV's unit order is the reference's, unit for unit", "[pipeline]") {
  // From deepseek-ai/DualPipe's dualpipev.py step() itself, its compute and messages stubbed
  // to log (tests/parallel/dualpipev_golden.py): F forward, B backward, I a backward whose
  // weights wait, W them; "&" before a pair run as one; chunk.micro-batch.
  struct Golden {
    int p;
    std::int64_t m;
    int s;
    const char* units;
  };
  const Golden golden[] = {
      {2, 4, 0, "F0.0 F0.1 F0.2 F1.0 I1.0 W1.0 F1.1 & F0.3 B1.1 & F1.2 B0.0 B1.2 & F1.3 B0.1 B1.3 I0.2 W0.2 I0.3 W0.3"},
      {2, 4, 1, "F0.0 F1.0 F0.1 F1.1 F0.2 B1.0 & F1.2 B0.0 & F0.3 B1.1 & F1.3 B0.1 B1.2 B0.2 I1.3 I0.3 W1.3 W0.3"},
      {3, 7, 0,
       "F0.0 F0.1 F0.2 F0.3 F0.4 F1.0 I1.0 W1.0 F1.1 I1.1 W1.1 F1.2 & F0.5 B1.2 & F1.3 B0.0 & F0.6 B1.3 & F1.4 B0.1 "
       "B1.4 & F1.5 B0.2 B1.5 & F1.6 B0.3 B1.6 I0.4 W0.4 I0.5 W0.5 I0.6 W0.6"},
      {3, 7, 1,
       "F0.0 F0.1 F0.2 F1.0 F0.3 F1.1 I1.0 W1.0 F1.2 & F0.4 B1.1 & F1.3 B0.0 & F0.5 B1.2 & F1.4 B0.1 & F0.6 B1.3 & "
       "F1.5 B0.2 B1.4 & F1.6 B0.3 B1.5 B0.4 I1.6 I0.5 W1.6 I0.6 W0.5 W0.6"},
      {3, 7, 2,
       "F0.0 F1.0 F0.1 F1.1 F0.2 F1.2 F0.3 B1.0 & F1.3 B0.0 & F0.4 B1.1 & F1.4 B0.1 & F0.5 B1.2 & F1.5 B0.2 & F0.6 "
       "B1.3 & F1.6 B0.3 B1.4 B0.4 B1.5 I0.5 I1.6 I0.6 W0.5 W1.6 W0.6"},
      {4, 9, 1,
       "F0.0 F0.1 F0.2 F0.3 F0.4 F1.0 F0.5 F1.1 I1.0 W1.0 F1.2 I1.1 W1.1 F1.3 & F0.6 B1.2 & F1.4 B0.0 & F0.7 B1.3 & "
       "F1.5 B0.1 & F0.8 B1.4 & F1.6 B0.2 B1.5 & F1.7 B0.3 B1.6 & F1.8 B0.4 B1.7 B0.5 I1.8 I0.6 W1.8 I0.7 W0.6 I0.8 "
       "W0.7 W0.8"},
      {4, 9, 3,
       "F0.0 F1.0 F0.1 F1.1 F0.2 F1.2 F0.3 F1.3 F0.4 B1.0 & F1.4 B0.0 & F0.5 B1.1 & F1.5 B0.1 & F0.6 B1.2 & F1.6 "
       "B0.2 & F0.7 B1.3 & F1.7 B0.3 & F0.8 B1.4 & F1.8 B0.4 B1.5 B0.5 B1.6 B0.6 I1.7 I0.7 I1.8 I0.8 W1.7 W0.7 W1.8 "
       "W0.8"},
  };
  for (const Golden& g : golden) {
    std::string ours;
    for (const PipeUnit& u : schedule_dualpipev(g.p, g.s, g.m)) {
      const char kind = "FBIW"[int(u.pass)];
      ours += fmt::format("{}{}{}{}.{}", ours.empty() ? "" : " ", u.paired ? "& " : "", kind, u.chunk, u.micro_batch);
    }
    INFO("stage " << g.s << " of " << g.p << ", " << g.m << " micro-batches");
    CHECK(ours == g.units);
  }
}

TEST_CASE("schedules: DualPipeV's whole backwards leave no weights units", "[pipeline]") {
  for (int s = 0; s < 3; ++s)
    for (const PipeUnit& u : schedule_dualpipev(3, s, 8, /*split=*/false))
      CHECK((u.pass == Pass::forward || u.pass == Pass::backward));
  CHECK(dualpipev_bubble_fraction(3, 8, false, false) > dualpipev_bubble_fraction(3, 8, false, true));
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
