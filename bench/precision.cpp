// The three precisions side by side on one config under mpirun with expert parallelism over
// every rank: expert-dispatch bytes per step (the rows sent to other ranks, as the
// Communicator counted them: FP32, BF16, or E4M3 codes plus one FP32 scale per 128) and the
// activations saved for backward per step (the most held at once, and the GEMM inputs among
// them), with tokens/s. Target (issue 8): fp8's dispatch at most 55% of bf16's.
// Usage: mpirun -np 2 build/bench/bench_precision [config] [key=value ...]
#include <spdlog/spdlog.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench/run_args.h"
#include "trainer/train.h"

using namespace moe;

int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  const int P = world.size();
  const auto [path, sets] =
      bench::run_args(argc, argv, 20, {"train.warmup_steps=1", "parallel.ep=" + std::to_string(P)});

  struct Row {
    double dispatch, rows, saved, gemm, tokens_per_s;
  };
  std::vector<Row> rows;
  const std::vector<std::string> names = {"fp32", "bf16", "fp8"};
  for (const auto& p : names) {
    auto kv = sets;
    kv.push_back("precision=" + p);
    const TrainResult r = train(load_config(path, kv), world);
    rows.push_back({world.all_reduce_sum(r.traffic.dispatch_bytes), world.all_reduce_sum(r.traffic.remote_token_ranks),
                    world.all_reduce_sum(double(r.profile.saved_bytes)) / P,
                    world.all_reduce_sum(double(r.profile.saved_gemm_bytes)) / P, r.tokens / r.wall_seconds});
  }
  if (world.rank() == 0) {
    const Config c = load_config(path, sets);
    const double C = double(c.model.d_model), row_fp8 = C + 4 * std::ceil(C / 128), row_bf16 = 2 * C;
    std::printf(
        "bench precision: %s, %d ranks (ep %d), d_model %.0f; per step, dispatch summed over ranks, saved "
        "activations per rank (mean); each run routes its own way, so bytes per row sent compare the formats\n"
        "%-6s %12s %9s %8s | %12s %8s | %13s %8s | %9s\n",
        path.c_str(), P, P, C, "", "dispatch B", "B per row", "vs fp32", "saved B", "vs fp32", "GEMM inputs B",
        "vs fp32", "tokens/s");
    auto per_row = [&](std::size_t i) { return rows[i].dispatch / rows[i].rows; };
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::printf("%-6s %12.0f %9.1f %8.3f | %12.0f %8.3f | %13.0f %8.3f | %9.0f\n", names[i].c_str(), rows[i].dispatch,
                  per_row(i), per_row(i) / per_row(0), rows[i].saved, rows[i].saved / rows[0].saved, rows[i].gemm,
                  rows[i].gemm / rows[0].gemm, rows[i].tokens_per_s);
    std::printf(
        "fp8 dispatch / bf16 dispatch: %.3f per row sent, %.3f per step (target <= 0.55; a row's bytes "
        "(C + 4 ceil(C/128)) / 2C = %.3f)\n",
        per_row(2) / per_row(1), rows[2].dispatch / rows[1].dispatch, row_fp8 / row_bf16);
    std::printf("fp8 GEMM inputs / fp32: %.3f (target <= 0.30); all saved activations: %.3f\n",
                rows[2].gemm / rows[0].gemm, rows[2].saved / rows[0].saved);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_precision: %s\n", e.what());
  return 1;
}
