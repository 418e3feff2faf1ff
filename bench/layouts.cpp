// Every parallel layout of P ranks (pp x dp x tp, ep folded) on one config, in one run under
// mpirun: tokens/s relative to dpP at the same global batch, and bytes per step by kind,
// measured by the Communicator counters, against the analytic minimum of the layout:
//   gradients   ring 2(p-1)/p x bytes: dense over dp, each rank's experts over edp
//               (ZeRO-1: reduce-scatter + all-gather, the same bytes)
//   tp          per micro-batch, 4 all-reduces of (B*T,C) per block (attention and FFN
//               outputs forward, their input gradients backward), one for the embedding's
//               lookup, one for the LM head's input gradient, the loss's (B*T) maxima
//               gathered and 2 x (B*T) f64 sums all-reduced; per step each router's gradient
//   pp          per micro-batch one (B*T,C) activation to the next stage, one gradient back
//   experts     the all-to-all bytes the routing implies (as bench_comm_bytes counts them)
// all summed over ranks; what is left over is scalars (loss, norms, expert loads).
// Usage: mpirun -np 8 build/bench/bench_layouts [config] [key=value ...]
#include <spdlog/spdlog.h>

#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "parallel/mesh.h"
#include "plan/stages.h"
#include "bench/run_args.h"
#include "trainer/train.h"

using namespace moe;

namespace {
double ring(double bytes, double p) { return p > 1 ? 2 * (p - 1) / p * bytes : 0; }
}  // namespace

// Over 60 lines by design: a benchmark's protocol read top to bottom (set up, warm up, time
// the rounds, print the ratio), as bench/README.md describes it.
int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  const int P = world.size();
  const auto [path, sets] = bench::run_args(argc, argv, 30, {"train.warmup_steps=1"});
  const Config base = load_config(path, sets);
  const std::int64_t global = P * base.train.grad_accum;  // micro-batches per step at dpP

  struct Case {
    std::string name;
    int pp, tp, ep, zero;
  };
  std::vector<Case> cases;
  for (int pp = 1; pp <= 2; ++pp)
    for (int tp = 1; tp <= 2; ++tp)
      for (int ep : {1, 4}) {
        if (P % (pp * tp) || ((P / (pp * tp)) * tp) % ep || (base.model.n_kv_heads % tp) || pp > base.model.n_layers)
          continue;
        const std::string name =
            fmt::format("pp{} dp{} tp{}{}", pp, P / (pp * tp), tp, ep > 1 ? fmt::format(" ep{}", ep) : "");
        cases.push_back({name, pp, tp, ep, 0});
      }
  cases.push_back({fmt::format("pp1 dp{} tp1 zero1", P), 1, 1, 1, 1});

  if (world.rank() == 0)
    std::printf(
        "bench layouts: %s, %d ranks, %lld sequences x %lld tokens per step; bytes per step summed over ranks (KB)\n"
        "%-22s %9s %7s | %10s %10s %6s | %9s %9s %9s %9s\n",
        path.c_str(), P, static_cast<long long>(global * base.train.micro_batch),
        static_cast<long long>(base.model.seq_len), "layout", "tokens/s", "vs dp", "measured", "minimum", "ratio",
        "grads", "tp", "pp", "a2a");
  double dp_rate = 0;
  for (const Case& c : cases) {
    auto kv = sets;
    for (const auto& s :
         {fmt::format("parallel.pp={}", c.pp), fmt::format("parallel.tp={}", c.tp), fmt::format("parallel.ep={}", c.ep),
          fmt::format("parallel.zero={}", c.zero), fmt::format("parallel.dp={}", P / (c.pp * c.tp)),
          fmt::format("train.grad_accum={}", global / (P / (c.pp * c.tp)))})
      kv.push_back(s);
    const Config cfg = load_config(path, kv);
    const Layout l = resolve_layout(cfg, P);
    const Coords at = coords_of(l, world.rank());
    const TrainResult r = train(cfg, world);
    const auto& m = cfg.model;
    const auto bounds = stage_bounds(cfg, l.pp);
    const bool first = at.pp == 0, last = at.pp == l.pp - 1;
    const double N = double(cfg.train.micro_batch * m.seq_len), C = double(m.d_model),
                 mbs = double(cfg.train.grad_accum);
    const double blocks = double(bounds[std::size_t(at.pp) + 1] - bounds[std::size_t(at.pp)]);
    double moe_blocks = 0;
    for (auto b = bounds[std::size_t(at.pp)]; b < bounds[std::size_t(at.pp) + 1]; ++b)
      moe_blocks += b >= m.dense_layers;
    const double grads =
        ring(4.0 * double(r.size.local_dense), l.dp) + ring(4.0 * double(r.size.local_experts), l.edp());
    const double tp = mbs * ((4 * blocks + first + last) * ring(4 * N * C, l.tp) +
                             (last && l.tp > 1 ? (l.tp - 1) * 4 * N + ring(16 * N, l.tp) : 0)) +
                      moe_blocks * ring(4.0 * double(m.routed_experts * m.d_model), l.tp);
    const double pp = mbs * 4 * N * C * (double(!last) + double(!first)) * (l.pp > 1);
    const double K = double(m.top_k), counts = l.ep > 1 ? double(l.ep - 1) * 4 * mbs * moe_blocks : 0;
    const double a2a = r.traffic.remote_token_ranks * (4 * 4 * C + 3 * K * 4) + counts;
    double mine = 0;
    for (const auto& [kind, bytes] : r.traffic.bytes_per_step) mine += double(bytes);
    const double sum = world.all_reduce_sum(mine), sg = world.all_reduce_sum(grads), stp = world.all_reduce_sum(tp),
                 spp = world.all_reduce_sum(pp), sa = world.all_reduce_sum(a2a), minimum = sg + stp + spp + sa;
    const double rate = double(global * cfg.train.micro_batch * m.seq_len) / r.profile.step_seconds;
    if (c.pp == 1 && c.tp == 1 && c.ep == 1 && c.zero == 0) dp_rate = rate;
    if (world.rank() == 0)
      std::printf("%-22s %9.0f %7.2f | %10.1f %10.1f %6.3f | %9.1f %9.1f %9.1f %9.1f%s\n", c.name.c_str(), rate,
                  rate / dp_rate, sum / 1e3, minimum / 1e3, sum / minimum, sg / 1e3, stp / 1e3, spp / 1e3, sa / 1e3,
                  l.pp > 1 ? fmt::format("  bubble {:.1f}% (1F1B {:.1f}%)", 100 * r.profile.bubble,
                                         100 * r.profile.ideal_bubble)
                                 .c_str()
                           : "");
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_layouts: %s\n", e.what());
  return 1;
}
