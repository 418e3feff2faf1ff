// Expert dispatch bytes per training step by link, flat against hierarchical, in one run
// under mpirun: ep over every rank, the ranks split into two simulated nodes
// (parallel.ranks_per_node = P/2), a few steps of a config (default configs/tiny.yaml, data
// prepared) per case: FP32, FP8, and FP32 with node-limited routing (a group per node, one
// group per token). The payload of the dispatch's forward (rows and FP8 scales; the
// combine and the backward move the same rows back and forth) summed over ranks and steps'
// mean: what crossed nodes, what stayed inside one, and the inter-node ratio. With
// --overlap: the step time with and without parallel.overlap under a slow link
// (debug.link_delay_ms, default 20), with the seconds inside the expert exchanges and those
// computed while they travelled (run it with no more ranks than cores: ranks computing at
// once on a shared core take turns, and the overlap turns into waiting). With --redundant:
// a skewed router (debug.collapse_routing: every token's first choice is expert 0) with 0, 1
// and 2 replica slots a rank (parallel.redundant_experts, chosen every 2 steps): the most
// loaded ep rank's rows over the mean, and the step time.
// Usage: mpirun -np P build/bench/bench_dispatch_links [config] [key=value ...]   (P even, >= 4)
//        mpirun -np 2 build/bench/bench_dispatch_links --overlap [config] [key=value ...]
//        mpirun -np 2 build/bench/bench_dispatch_links --redundant [config] [key=value ...]
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "bench/run_args.h"
#include "parallel/mesh.h"
#include "trainer/train.h"

using namespace moe;

// Each setting twice, alternating (off, on, off, on), the faster of the two kept: the first
// run of a process pays for warming up.
void overlap(MpiCommunicator& world, const std::string& path, const std::vector<std::string>& sets) {
  const int P = world.size();
  if (world.rank() == 0)
    std::printf(
        "\nstep time under a slow link, ep %d, flat dispatch, ms per step (rank 0, best of 2)\n"
        "%-22s %-8s %10s %16s %14s\n",
        P, "case", "overlap", "step", "in exchanges", "overlapped");
  struct Case {
    const char* name;
    std::vector<std::string> keys;
  };
  for (const Case& c :
       {Case{"as configured", {}}, Case{"4 x 256 shared", {"model.shared_experts=4", "model.expert_hidden=256"}}}) {
    StepProfile best[2];
    for (int round = 0; round < 4; ++round) {
      const int on = round % 2;
      auto kv = sets;
      kv.insert(kv.begin(), "debug.link_delay_ms=20");  // the caller's keys win
      kv.insert(kv.end(), c.keys.begin(), c.keys.end());
      kv.insert(kv.end(),
                {"parallel.ep=" + std::to_string(P), std::string("parallel.overlap=") + (on ? "true" : "false")});
      const StepProfile p = train(load_config(path, kv), world).profile;
      if (round < 2 || p.step_seconds < best[on].step_seconds) best[on] = p;
    }
    for (int on = 0; on < 2; ++on)
      if (world.rank() == 0)
        std::printf("%-22s %-8s %10.1f %16.1f %14.1f\n", c.name, on ? "true" : "false", 1e3 * best[on].step_seconds,
                    1e3 * best[on].expert_seconds, 1e3 * best[on].expert_overlap_seconds);
  }
}

// Each slot count twice, alternating, the faster run's step kept.
void redundant(MpiCommunicator& world, const std::string& path, const std::vector<std::string>& sets) {
  const int P = world.size();
  if (world.rank() == 0)
    std::printf(
        "\nredundant experts under a collapsed router, ep %d: most loaded rank's rows / mean after the first "
        "choice, ms per step (rank 0, best of 2)\n%-14s %12s %10s\n",
        P, "slots a rank", "max/mean", "step");
  for (const int slots : {0, 1, 2}) {
    double best = 0, imbalance = 0;
    for (int round = 0; round < 2; ++round) {
      auto kv = sets;
      kv.insert(kv.end(), {"parallel.ep=" + std::to_string(P), "debug.collapse_routing=true",
                           "parallel.rebalance_every=2", "parallel.redundant_experts=" + std::to_string(slots)});
      const TrainResult r = train(load_config(path, kv), world);
      const auto& v = r.rank_imbalance;
      imbalance = std::accumulate(v.begin() + 2, v.end(), 0.0) / double(v.size() - 2);
      if (round == 0 || r.profile.step_seconds < best) best = r.profile.step_seconds;
    }
    if (world.rank() == 0) std::printf("%-14d %12.3f %10.1f\n", slots, imbalance, 1e3 * best);
  }
}

int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  const int P = world.size();
  if (argc > 1 && std::string(argv[1]) == "--overlap") {
    const auto [path, sets] = bench::run_args(argc - 1, argv + 1, 10);
    overlap(world, path, sets);
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "--redundant") {
    const auto [path, sets] = bench::run_args(argc - 1, argv + 1, 20);
    redundant(world, path, sets);
    return 0;
  }
  if (P < 4 || P % 2) throw std::runtime_error("run on an even number of ranks, at least 4");
  const auto [path, sets] = bench::run_args(argc, argv, 10);
  if (world.rank() == 0)
    std::printf(
        "bench dispatch_links: %s, ep %d over 2 nodes of %d; dispatch payload per step, KB summed over ranks\n"
        "%-13s %-13s %10s %10s %10s %12s\n",
        path.c_str(), P, P / 2, "case", "dispatch", "inter-node", "intra-node", "total", "inter/flat");
  struct Case {
    const char* name;
    std::vector<std::string> keys;
  };
  const std::vector<Case> cases = {{"fp32", {"precision=fp32"}},
                                   {"fp8", {"precision=fp8"}},
                                   {"fp32 1 node", {"precision=fp32", "model.n_groups=2", "model.topk_groups=1"}}};
  for (const Case& c : cases) {
    double flat_inter = 0;
    for (const std::string dispatch : {"flat", "hierarchical"}) {
      auto kv = sets;
      kv.insert(kv.end(), {"parallel.ep=" + std::to_string(P), "parallel.ranks_per_node=" + std::to_string(P / 2),
                           "parallel.dispatch=" + dispatch});
      kv.insert(kv.end(), c.keys.begin(), c.keys.end());
      const TrainResult r = train(load_config(path, kv), world);
      const double inter = world.all_reduce_sum(r.traffic.inter_node_bytes),
                   total = world.all_reduce_sum(r.traffic.dispatch_bytes);
      if (dispatch == "flat") flat_inter = inter;
      if (world.rank() == 0)
        std::printf("%-13s %-13s %10.1f %10.1f %10.1f %12.3f\n", c.name, dispatch.c_str(), inter / 1e3,
                    (total - inter) / 1e3, total / 1e3, flat_inter > 0 ? inter / flat_inter : 0.0);
    }
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_dispatch_links: %s\n", e.what());
  return 1;
}
