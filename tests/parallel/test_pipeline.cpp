// Run under mpirun, one pipeline stage per rank: the 1F1B schedule (parallel/pipeline.h).
//  - Every micro-batch goes forward through the stages in order and backward in reverse,
//    each exactly once, backwards in micro-batch order, with at most p - s in flight on
//    stage s; the values that arrive are the ones sent (each stage adds its index).
//  - With stages that take equal time (forward sleeps tf, backward 2 tf: sleeping leaves
//    the oversubscribed cores to the other ranks), the idle share of the schedule equals
//    (p-1)/(m+p-1) within 0.05.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <thread>

#include "parallel/mpi_communicator.h"
#include "parallel/pipeline.h"

using namespace moe;
using Clock = std::chrono::steady_clock;

TEST_CASE("pipeline: 1F1B moves every micro-batch once each way, in order", "[mpi]") {
  MpiCommunicator pp;
  const int p = pp.size(), s = pp.rank();
  for (const std::int64_t m : {std::int64_t(1), std::int64_t(p), std::int64_t(2 * p + 1)}) {
    std::vector<std::int64_t> forwards, backwards;
    std::set<std::int64_t> in_flight;
    std::size_t most = 0;
    const StageWork work{.forward = [&](std::int64_t i, const Tensor& in) {
                           // Stage s receives 100 i + 0 + 1 + ... + (s-1) and adds s.
                           const float want = float(100 * i + s * (s - 1) / 2);
                           if (s > 0) CHECK(in.data<float>()[0] == want);
                           forwards.push_back(i);
                           in_flight.insert(i);
                           most = std::max(most, in_flight.size());
                           Tensor out = Tensor::empty({3}, DType::f32);
                           for (int j = 0; j < 3; ++j) out.data<float>()[j] = want + float(s);
                           return out;
                         },
                         .backward = [&](std::int64_t i, const Tensor& dout) {
                           // The gradient of micro-batch i starts at -i on the last stage; each stage adds 1.
                           if (s < p - 1) CHECK(dout.data<float>()[2] == float(-i + (p - 1 - s)));
                           CHECK(in_flight.count(i) == 1);
                           in_flight.erase(i);
                           backwards.push_back(i);
                           Tensor din = Tensor::empty({3}, DType::f32);
                           for (int j = 0; j < 3; ++j) din.data<float>()[j] = float(-i + (p - 1 - s) + 1);
                           return din;
                         },
                         .activation = {3}};
    run_1f1b(pp, m, work);
    INFO("stage " << s << " of " << p << ", " << m << " micro-batches");
    REQUIRE(forwards.size() == std::size_t(m));
    REQUIRE(backwards.size() == std::size_t(m));
    for (std::int64_t i = 0; i < m; ++i) {
      CHECK(forwards[std::size_t(i)] == i);
      CHECK(backwards[std::size_t(i)] == i);
    }
    CHECK(most <= std::size_t(std::min<std::int64_t>(m, p - s)));
    CHECK(in_flight.empty());
  }
}

TEST_CASE("pipeline: the measured bubble of equal stages is (p-1)/(m+p-1)", "[mpi]") {
  MpiCommunicator pp;
  const int p = pp.size();
  const auto tf = std::chrono::milliseconds(15);
  for (const std::int64_t m : {std::int64_t(p), std::int64_t(3 * p)}) {
    double busy = 0;
    auto work_for = [&](std::chrono::milliseconds d) {
      const auto t0 = Clock::now();
      std::this_thread::sleep_for(d);
      busy += std::chrono::duration<double>(Clock::now() - t0).count();
    };
    const StageWork work{.forward = [&](std::int64_t, const Tensor&) {
                           work_for(tf);
                           return Tensor::zeros({4}, DType::f32);
                         },
                         .backward = [&](std::int64_t, const Tensor&) {
                           work_for(2 * tf);
                           return Tensor::zeros({4}, DType::f32);
                         },
                         .activation = {4}};
    pp.barrier();
    const auto t0 = Clock::now();
    run_1f1b(pp, m, work);
    pp.barrier();  // the span ends when the pipeline has drained everywhere
    const double span = std::chrono::duration<double>(Clock::now() - t0).count();
    const double idle = pp.all_reduce_sum(1 - busy / span) / p, ideal = bubble_fraction(p, m);
    if (pp.rank() == 0)
      std::printf("pipeline: %d stages, %lld micro-batches: idle %.3f of the schedule, 1F1B ideal %.3f\n", p,
                  static_cast<long long>(m), idle, ideal);
    INFO(p << " stages, " << m << " micro-batches");
    CHECK(std::abs(idle - ideal) <= 0.05);
  }
}
