// Run under mpirun, one pipeline stage per rank: the 1F1B schedules (comm/pipeline.h),
// plain (v = 1) and interleaved (v = 2 model chunks per stage), and DualPipeV.
//  - Every micro-batch goes forward through the virtual stages in order and backward in
//    reverse, each (micro-batch, chunk) exactly once, backwards of a chunk in micro-batch
//    order, with at most p - s micro-batches in flight on stage s of plain 1F1B; the values
//    that arrive are the ones sent (each virtual stage adds its index).
//  - With stages that take equal time (a chunk's forward sleeps tf / v, its backward
//    2 tf / v: sleeping leaves the oversubscribed cores to the other ranks), the idle share
//    of the schedule equals (p-1)/(v m + p-1) within 0.05.
//  - DualPipeV: the same through the V (virtual stages s and 2p-1-s on stage s), every split
//    backward's weights run once after it, at most 2p + 1 units held; with forward, input and
//    weight units of equal time its idle share is the DualPipe repository's (PP/2-1)(F&B + B
//    - 3W) with F&B = F + B: (p-1)/(3m + p-1), within 0.03.
#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>
#include <thread>

#include "parallel/mpi_communicator.h"
#include "comm/pipeline.h"

using namespace moe;
using Clock = std::chrono::steady_clock;

TEST_CASE("pipeline: 1F1B moves every micro-batch once each way, in order", "[mpi]") {
  MpiCommunicator pp;
  const int p = pp.size(), s = pp.rank();
  struct Case {
    std::int64_t m;
    int v;
  };
  for (const Case k : {Case{1, 1}, Case{p, 1}, Case{2 * p + 1, 1}, Case{p, 2}, Case{3 * p, 2}}) {
    const int last = p * k.v - 1;
    std::vector<std::pair<std::int64_t, int>> forwards, backwards;
    std::set<std::pair<std::int64_t, int>> in_flight;
    std::set<std::int64_t> micro_batches_in_flight;
    std::size_t most = 0;
    const StageWork work{.forward =
                             [&](std::int64_t i, int c, const Tensor& in) {
                               // Virtual stage u receives 100 i + 0 + 1 + ... + (u-1) and adds u.
                               const int u = c * p + s;
                               const float want = float(100 * i + u * (u - 1) / 2);
                               if (u > 0) CHECK(in.data<float>()[0] == want);
                               forwards.push_back({i, c});
                               in_flight.insert({i, c});
                               micro_batches_in_flight.insert(i);
                               most = std::max(most, micro_batches_in_flight.size());
                               Tensor out = Tensor::empty({3}, DType::f32);
                               for (int j = 0; j < 3; ++j) out.data<float>()[j] = want + float(u);
                               return out;
                             },
                         .backward =
                             [&](std::int64_t i, int c, const Tensor& dout) {
                               // The gradient of micro-batch i starts at -i on the last virtual stage; each adds 1.
                               const int u = c * p + s;
                               if (u < last) CHECK(dout.data<float>()[2] == float(-i + (last - u)));
                               CHECK(in_flight.count({i, c}) == 1);
                               in_flight.erase({i, c});
                               if (c == 0) micro_batches_in_flight.erase(i);
                               backwards.push_back({i, c});
                               Tensor din = Tensor::empty({3}, DType::f32);
                               for (int j = 0; j < 3; ++j) din.data<float>()[j] = float(-i + (last - u) + 1);
                               return din;
                             },
                         .activation = {3}};
    run_1f1b(pp, k.m, work, k.v);
    INFO("stage " << s << " of " << p << ", " << k.m << " micro-batches, " << k.v << " chunks");
    REQUIRE(forwards.size() == std::size_t(k.m * k.v));
    REQUIRE(backwards.size() == std::size_t(k.m * k.v));
    CHECK(std::set(forwards.begin(), forwards.end()).size() == forwards.size());
    for (int c = 0; c < k.v; ++c) {
      std::int64_t next = 0;
      for (const auto& [i, cc] : backwards)
        if (cc == c) CHECK(i == next++);
    }
    if (k.v == 1) CHECK(most <= std::size_t(std::min<std::int64_t>(k.m, p - s)));
    CHECK(in_flight.empty());
  }
}

TEST_CASE("pipeline: the measured bubble of equal stages is (p-1)/(v m + p-1)", "[mpi]") {
  MpiCommunicator pp;
  const int p = pp.size();
  const auto tf = std::chrono::microseconds(16000);
  for (const int v : {1, 2})
    for (const std::int64_t m : {std::int64_t(p), std::int64_t(3 * p)}) {
      double busy = 0;
      auto work_for = [&](std::chrono::microseconds d) {
        const auto t0 = Clock::now();
        std::this_thread::sleep_for(d);
        busy += std::chrono::duration<double>(Clock::now() - t0).count();
      };
      const StageWork work{.forward =
                               [&](std::int64_t, int, const Tensor&) {
                                 work_for(tf / v);
                                 return Tensor::zeros({4}, DType::f32);
                               },
                           .backward =
                               [&](std::int64_t, int, const Tensor&) {
                                 work_for(2 * tf / v);
                                 return Tensor::zeros({4}, DType::f32);
                               },
                           .activation = {4}};
      pp.barrier();
      const auto t0 = Clock::now();
      run_1f1b(pp, m, work, v);
      pp.barrier();  // the span ends when the pipeline has drained everywhere
      const double span = std::chrono::duration<double>(Clock::now() - t0).count();
      const double idle = pp.all_reduce_sum(1 - busy / span) / p, ideal = bubble_fraction(p, m, v);
      if (pp.rank() == 0)
        std::printf("pipeline: %d stages x %d chunks, %lld micro-batches: idle %.3f of the schedule, ideal %.3f\n", p,
                    v, static_cast<long long>(m), idle, ideal);
      INFO(p << " stages, " << v << " chunks, " << m << " micro-batches");
      CHECK(std::abs(idle - ideal) <= 0.05);
    }
}

TEST_CASE("pipeline: DualPipeV moves every micro-batch once each way through the V", "[mpi]") {
  MpiCommunicator pp;
  const int p = pp.size(), s = pp.rank();
  const PipeShape shape{p, 2, true};
  const int last = shape.last();
  for (const std::int64_t m : {std::int64_t(2 * p), std::int64_t(2 * p + 1), std::int64_t(3 * p + 2)}) {
    std::vector<std::pair<std::int64_t, int>> forwards, backwards;
    std::set<std::pair<std::int64_t, int>> in_flight, waiting;
    std::size_t held = 0, most = 0, weights = 0;
    const auto forward = [&](std::int64_t i, int c, const Tensor& in) {
      const int u = shape.virtual_stage(s, c);  // receives 100 i + 0 + 1 + ... + (u-1) and adds u
      const float want = float(100 * i + u * (u - 1) / 2);
      if (u > 0) CHECK(in.data<float>()[0] == want);
      forwards.push_back({i, c});
      in_flight.insert({i, c});
      most = std::max(most, ++held);
      Tensor out = Tensor::empty({3}, DType::f32);
      for (int j = 0; j < 3; ++j) out.data<float>()[j] = want + float(u);
      return out;
    };
    const auto backward = [&](std::int64_t i, int c, const Tensor& dout, bool split) {
      const int u = shape.virtual_stage(s, c);  // micro-batch i's gradient starts at -i; each adds 1
      if (u < last) CHECK(dout.data<float>()[2] == float(-i + (last - u)));
      CHECK(in_flight.erase({i, c}) == 1);
      if (split) waiting.insert({i, c});
      else --held;
      backwards.push_back({i, c});
      Tensor din = Tensor::empty({3}, DType::f32);
      for (int j = 0; j < 3; ++j) din.data<float>()[j] = float(-i + (last - u) + 1);
      return din;
    };
    const StageWork work{
        .forward = forward,
        .backward = [&](std::int64_t i, int c, const Tensor& dout) { return backward(i, c, dout, false); },
        .activation = {3},
        .inputs = [&](std::int64_t i, int c, const Tensor& dout) { return backward(i, c, dout, true); },
        .weights =
            [&](std::int64_t i, int c) {
              CHECK(waiting.erase({i, c}) == 1);  // once, after its inputs unit
              --held, ++weights;
            }};
    run_dualpipev(pp, m, work);
    INFO("stage " << s << " of " << p << ", " << m << " micro-batches");
    REQUIRE(forwards.size() == std::size_t(2 * m));
    REQUIRE(backwards.size() == std::size_t(2 * m));
    CHECK(std::set(forwards.begin(), forwards.end()).size() == forwards.size());
    for (int c = 0; c < 2; ++c) {
      std::int64_t next_f = 0, next_b = 0;
      for (const auto& [i, cc] : forwards)
        if (cc == c) CHECK(i == next_f++);
      for (const auto& [i, cc] : backwards)
        if (cc == c) CHECK(i == next_b++);
    }
    CHECK(in_flight.empty());
    CHECK(waiting.empty());
    CHECK(weights > 0);
    CHECK(most <= std::size_t(2 * p + 1));  // the repository's activation memory: PP + 1 stages' worth
  }
}

TEST_CASE("pipeline: DualPipeV's measured bubble is the DualPipe repository's formula", "[mpi]") {
  MpiCommunicator pp;
  const int p = pp.size();
  const auto t = std::chrono::microseconds(10000);  // a forward, an input-gradient, a weight-gradient unit
  for (const bool pairs : {true, false})
    for (const std::int64_t m : {std::int64_t(2 * p), std::int64_t(3 * p)}) {
      double busy = 0;
      auto work_for = [&](std::chrono::microseconds d) {
        const auto t0 = Clock::now();
        std::this_thread::sleep_for(d);
        busy += std::chrono::duration<double>(Clock::now() - t0).count();
      };
      const auto pass = [&](int units) {
        return [&, units](std::int64_t, int, const Tensor&) {
          work_for(units * t);
          return Tensor::zeros({4}, DType::f32);
        };
      };
      const StageWork work{.forward = pass(1),
                           .backward = pass(2),
                           .activation = {4},
                           .inputs = pass(1),
                           .weights = [&](std::int64_t, int) { work_for(t); },
                           .pair_units = pairs};
      pp.barrier();
      const auto t0 = Clock::now();
      run_dualpipev(pp, m, work);
      pp.barrier();
      const double span = std::chrono::duration<double>(Clock::now() - t0).count();
      const double idle = pp.all_reduce_sum(1 - busy / span) / p, ideal = dualpipev_bubble_fraction(p, m, pairs);
      if (pp.rank() == 0)
        std::printf(
            "pipeline: DualPipeV over %d stages, %lld micro-batches, pairs %s: idle %.3f of the schedule, "
            "%s %.3f (1F1B: %.3f)\n",
            p, static_cast<long long>(m), pairs ? "as one" : "apart", idle, pairs ? "formula" : "simulated", ideal,
            bubble_fraction(p, m));
      INFO(p << " stages, " << m << " micro-batches, pairs " << pairs);
      CHECK(std::abs(idle - ideal) <= 0.03);  // (measured within 0.003; pairs apart idle about half)
      if (!pairs) CHECK(ideal < dualpipev_bubble_fraction(p, m, true));
    }
}
