// The moe executable: one binary, one subcommand per job.
//   mpirun -np N moe train CONFIG [--set key=value ...]
//   moe config show CONFIG [--set ...] | moe config reference | moe info
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "kernels/device.h"
#include "parallel/communicator.h"
#include "trainer/config.h"
#include "trainer/skeleton.h"

namespace {

using moe::Config;

void print_summary(const Config& cfg, const moe::RunSummary& s, int world) {
  const double device_hours = world * s.wall_seconds / 3600.0;
  std::printf(
      "\n== run summary ==\n"
      "steps            %lld of %lld\n"
      "tokens           %.0f (%d ranks, %.0f tokens/s)\n"
      "loss             %.4f -> %.4f (validation %.4f)\n"
      "wall time        %.2f s\n"
      "device-hours     %.6f (%d ranks x wall time; priced per cluster by the cost report)\n",
      static_cast<long long>(s.steps), static_cast<long long>(cfg.train.steps), s.tokens, world, s.tokens / s.wall_seconds,
      s.first_loss, s.last_loss, s.val_loss, s.wall_seconds, device_hours, world);
}

int run_train(int argc, char** argv, const std::string& path, const std::vector<std::string>& sets, bool print_config) {
  moe::MpiSession mpi(&argc, &argv);
  moe::Communicator world;
  Config cfg;
  try {
    cfg = moe::load_config(path, sets);  // every rank validates; all fail alike, before any collective
  } catch (const moe::Error& e) {
    if (world.rank() == 0) std::cerr << "moe: error: " << e.what() << "\n";
    return 2;
  }
  try {
    if (world.rank() == 0 && print_config) std::cout << moe::config_to_yaml(cfg) << std::flush;
    const auto summary = moe::train_skeleton(cfg, world);
    if (world.rank() == 0) print_summary(cfg, summary, world.size());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "moe: error on rank " << world.rank() << ": " << e.what() << "\n";
    // Other ranks may be waiting in a collective: take the whole job down, non-zero.
    if (world.size() > 1) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe: pre-train and fine-tune Mixture-of-Experts language models"};
  app.require_subcommand(1);
  std::string config_path;
  std::vector<std::string> sets;
  auto add_overrides = [&](CLI::App* cmd) {
    cmd->add_option("--set", sets, "override a config key, e.g. --set train.lr=1e-3 (repeatable)")
        ->type_size(1)->allow_extra_args(false);
  };

  auto* train = app.add_subcommand("train", "train a model from a YAML config (launch with mpirun -np N)");
  train->add_option("config", config_path, "YAML config, e.g. configs/tiny.yaml")->required()->check(CLI::ExistingFile);
  add_overrides(train);
  bool print_config = false;
  train->add_flag("--print-config", print_config, "print the resolved config before training");

  auto* config = app.add_subcommand("config", "inspect configs");
  config->require_subcommand(1);
  auto* show = config->add_subcommand("show", "validate a config and print it resolved (every key)");
  show->add_option("config", config_path, "YAML config")->required()->check(CLI::ExistingFile);
  add_overrides(show);
  auto* reference = config->add_subcommand("reference", "print every key as a Markdown table (README's reference)");

  auto* info = app.add_subcommand("info", "print how this moe was built and what it can see");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] %v");  // plain: logs go to files under mpirun

  try {
    if (*train) return run_train(argc, argv, config_path, sets, print_config);
    if (*show) std::cout << moe::config_to_yaml(moe::load_config(config_path, sets));
    if (*reference) std::cout << moe::config_reference_markdown();
    if (*info)
      std::cout << "moe " << MOE_VERSION << "\nCUDA backend: " << (moe::built_with_cuda() ? "built" : "not built")
                << "\nCUDA devices: " << moe::cuda_device_count() << "\n";
  } catch (const moe::Error& e) {
    std::cerr << "moe: error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
