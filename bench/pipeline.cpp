// The pipeline schedules on one config and one global batch, in one run under mpirun with
// one stage per rank (pp = P): 1F1B (PipeDream-Flush, Megatron's), interleaved 1F1B with two
// chunks per stage (Megatron's virtual stages) and DualPipeV (DeepSeek's, comm/pipeline.h).
// Per schedule: tokens/s and its ratio to 1F1B's, the bubble the trainer measured (the share
// of the schedule a rank did not compute, mean over ranks) and the schedule's ideal with
// equal stages, and the most activation bytes stage 0 held (StepProfile::saved_bytes).
// Usage: mpirun -np P build/bench/bench_pipeline [config] [key=value ...]
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>
#include <vector>

#include "bench/run_args.h"
#include "parallel/mpi_communicator.h"
#include "trainer/train.h"

using namespace moe;

// Over 40 lines by design: a benchmark's protocol read top to bottom (bench/README.md).
int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  const int P = world.size();
  const auto [path, sets] =
      bench::run_args(argc, argv, 20,
                      {"train.warmup_steps=1", fmt::format("parallel.pp={}", P), "parallel.dp=1",
                       fmt::format("model.n_layers={}", 4 * P), fmt::format("train.grad_accum={}", 4 * P)});
  struct Case {
    std::string name, schedule;
    int virtual_stages;
  };
  const std::vector<Case> cases = {
      {"1F1B", "1f1b", 1}, {"interleaved 1F1B, v 2", "1f1b", 2}, {"DualPipeV", "dualpipev", 1}};
  const Config first = load_config(path, sets);
  if (world.rank() == 0)
    std::printf(
        "bench pipeline: %s, %d stages, %lld blocks, %lld micro-batches of %lld x %lld tokens a step\n"
        "%-22s %10s %8s | %9s %9s | %12s\n",
        path.c_str(), P, static_cast<long long>(first.model.n_layers), static_cast<long long>(first.train.grad_accum),
        static_cast<long long>(first.train.micro_batch), static_cast<long long>(first.model.seq_len), "schedule",
        "tokens/s", "vs 1F1B", "bubble", "ideal", "held (KB)");
  double base = 0;
  for (const Case& c : cases) {
    auto kv = sets;
    kv.push_back("parallel.schedule=" + c.schedule);
    kv.push_back(fmt::format("parallel.virtual_stages={}", c.virtual_stages));
    const Config cfg = load_config(path, kv);
    const TrainResult r = train(cfg, world);
    const double tokens = double(cfg.train.grad_accum * cfg.train.micro_batch * cfg.model.seq_len);
    const double rate = tokens / r.profile.step_seconds;
    const double held = double(r.profile.saved_bytes);  // stage 0's: the most, in each schedule
    if (base == 0) base = rate;
    if (world.rank() == 0)
      std::printf("%-22s %10.0f %8.3f | %8.1f%% %8.1f%% | %12.1f\n", c.name.c_str(), rate, rate / base,
                  100 * r.profile.bubble, 100 * r.profile.ideal_bubble, held / 1e3);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_pipeline: %s\n", e.what());
  return 1;
}
