// The command line the training benchmarks share: `bench_X [config] [key=value ...]`.
#pragma once
#include <spdlog/spdlog.h>

#include <string>
#include <vector>

namespace moe::bench {

struct RunArgs {
  std::string config;             // argv[1], or the embedded default
  std::vector<std::string> sets;  // overrides: a quiet measured run, then argv[2..]
};

// A run of `steps` steps without evaluation, logging or checkpoints (a run directory from
// an earlier run would be resumed, not measured), plus `extra`, then the user's overrides.
inline RunArgs run_args(int argc, char** argv, int steps, std::vector<std::string> extra = {}) {
  RunArgs a{argc > 1 ? argv[1] : "configs/tiny.yaml",
            {"train.steps=" + std::to_string(steps), "train.eval_every=0", "train.eval_batches=1",
             "train.log_every=1000", "checkpoint.dir="}};
  a.sets.insert(a.sets.end(), extra.begin(), extra.end());
  for (int i = 2; i < argc; ++i) a.sets.emplace_back(argv[i]);
  spdlog::set_level(spdlog::level::warn);
  return a;
}

}  // namespace moe::bench
