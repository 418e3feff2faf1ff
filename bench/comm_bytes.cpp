// Bytes per training step, measured by the Communicator counters, against the analytic
// minimum for the layout, in one run under mpirun: for each layout that fits the rank count,
// a few steps of a config (default configs/tiny.yaml, data prepared), then the table.
//   gradients: ring all-reduce 2(p-1)/p x bytes over dp for the dense parameters and over
//              edp for each rank's experts (ZeRO-1's reduce-scatter + all-gather: the same)
//   experts:   the all-to-all bytes the routing implies: a token goes once to each other
//              rank holding one of its kept experts, 4 passes (dispatch, combine, and both
//              again in backward) plus per-slot metadata (expert, gate, gate gradient);
//              beside it the payload alone, and what one row per (token, expert) would move
// Everything is summed over ranks. Scalars (loss, expert loads, norms) count as overhead.
// Usage: mpirun -np P build/bench/bench_comm_bytes [config] [key=value ...]
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "bench/run_args.h"
#include "trainer/train.h"

using namespace moe;

int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  const int P = world.size();
  const auto [path, sets] = bench::run_args(argc, argv, 10);

  struct Case {
    std::string name;
    std::vector<std::string> keys;
  };
  std::vector<Case> cases = {{"dp" + std::to_string(P), {}},
                             {"dp" + std::to_string(P) + " zero1", {"parallel.zero=1"}}};
  for (int ep = 2; ep <= P; ep *= 2) {
    cases.push_back({"ep" + std::to_string(ep), {"parallel.ep=" + std::to_string(ep)}});
    cases.push_back({"ep" + std::to_string(ep) + " zero1", {"parallel.ep=" + std::to_string(ep), "parallel.zero=1"}});
  }
  // Group-limited routing (tiny.yaml: 4 groups, top-2) against none, at one group per rank.
  if (P >= 4) cases.push_back({"ep4 no groups", {"parallel.ep=4", "model.n_groups=1", "model.topk_groups=1"}});

  if (world.rank() == 0)
    std::printf(
        "bench comm_bytes: %s, %d ranks; bytes per step summed over ranks (KB)\n%-16s %10s %10s %7s | %9s %9s %9s "
        "%9s\n",
        path.c_str(), P, "layout", "measured", "minimum", "ratio", "a2a", "implied", "payload", "per-expert");
  for (const Case& c : cases) {
    auto kv = sets;
    kv.insert(kv.end(), c.keys.begin(), c.keys.end());
    const Config cfg = load_config(path, kv);
    const Layout l = resolve_layout(cfg, P);
    const TrainResult r = train(cfg, world);
    const double C = double(cfg.model.d_model), row = C * 4;
    const double dense = double(r.size.parameters - r.size.expert_parameters) * 4,
                 experts = double(r.size.expert_parameters) / l.ep * 4;
    const double grads = 2.0 * (l.dp - 1) / l.dp * dense + 2.0 * (l.edp() - 1) / l.edp() * experts;
    std::uint64_t mine = 0, a2a = 0;
    for (const auto& [kind, bytes] : r.traffic.bytes_per_step) mine += bytes, a2a += kind == "all_to_all" ? bytes : 0;
    // Per MoE layer and micro-batch: to each other rank a row count and an assignment count
    // per expert it holds (the dispatch plan's counts, model/dispatch.h); per (token, other
    // rank) row: x with 2K floats of metadata out, the combined row back, dout out, dx and
    // K gate gradients back.
    const double K = double(cfg.model.top_k),
                 passes = double(cfg.train.grad_accum) * double(cfg.model.n_layers - cfg.model.dense_layers);
    const double experts_per_rank = double(cfg.model.routed_experts) / l.ep;
    const double counts = l.ep > 1 ? double(l.ep - 1) * 4 * (1 + experts_per_rank) * passes : 0;
    const double implied = r.traffic.remote_token_ranks * (4 * row + 3 * K * 4) + counts;
    const double once = 4 * r.traffic.remote_token_ranks * row + counts;     // payload alone, once per (token, rank)
    const double per_assignment = 4 * r.traffic.remote_rows * row + counts;  // one row per (token, expert)
    const double sum_mine = world.all_reduce_sum(double(mine)), sum_a2a = world.all_reduce_sum(double(a2a));
    const double sum_implied = world.all_reduce_sum(implied), sum_once = world.all_reduce_sum(once),
                 sum_assign = world.all_reduce_sum(per_assignment);
    const double minimum = P * grads + sum_implied;
    if (world.rank() == 0)
      std::printf("%-16s %10.1f %10.1f %7.3f | %9.1f %9.1f %9.1f %9.1f\n", c.name.c_str(), sum_mine / 1e3,
                  minimum / 1e3, sum_mine / minimum, sum_a2a / 1e3, sum_implied / 1e3, sum_once / 1e3,
                  sum_assign / 1e3);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_comm_bytes: %s\n", e.what());
  return 1;
}
