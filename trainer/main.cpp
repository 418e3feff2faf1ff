// The moe executable: one binary, one subcommand per job.
//   moe data prepare CONFIG [--set ...] [--force]
//   mpirun -np N moe train CONFIG [--set key=value ...]
//   moe plan CONFIG [--cluster NAME] [--devices N] [--layout pp=..,dp=..,tp=..,ep=..,zero=..] [--search]
//   moe ckpt inspect PATH | moe export PATH --format safetensors OUT | moe config show CONFIG [--set ...] | moe config
//   reference | moe info
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "checkpoint/store.h"
#include "data/prepare.h"
#include "kernels/ops.h"
#include "kernels/device.h"
#include "parallel/mpi_communicator.h"
#include "plan/plan.h"
#include "config/config.h"
#include "trainer/inference_cli.h"
#include "trainer/cost.h"
#include "trainer/error_line.h"
#include "trainer/export.h"
#include "trainer/hf_import.h"
#include "trainer/run_meta.h"
#include "trainer/train.h"

namespace {

using moe::Config;

void print_summary(const Config& cfg, const moe::TrainResult& r, int world) {
  std::printf(
      "\n== run summary ==\n"
      "steps             %lld of %lld\n"
      "tokens            %.0f (%d ranks, %.0f tokens/s)\n"
      "training loss     %.4f -> %.4f\n"
      "validation loss   %.4f (unigram entropy of the corpus: %.4f nats/token)\n"
      "wall time         %.2f s (this segment)\n"
      "device-hours      %.6f (%d ranks x wall time, all launches of the run; the cost report below splits them)\n",
      static_cast<long long>(r.steps), static_cast<long long>(cfg.train.steps), r.tokens, world,
      r.tokens / r.wall_seconds, r.losses.empty() ? 0.0 : r.losses.front(), r.losses.empty() ? 0.0 : r.losses.back(),
      r.val_loss, r.unigram_entropy, r.wall_seconds - r.resume.prior_wall_seconds, r.device_hours, world);
  if (!r.resume.resumed_from.empty())
    std::printf("resumed from      %s (step %lld)\n", r.resume.resumed_from.c_str(),
                static_cast<long long>(r.resume.start_step));
  if (!r.resume.init_from.empty())
    std::printf("fine-tuned from   %s (validation loss %.4f before training)\n", r.resume.init_from.c_str(),
                r.resume.init_val_loss);
  if (!r.resume.last_checkpoint.empty()) std::printf("checkpoint        %s\n", r.resume.last_checkpoint.c_str());
  if (r.skipped_steps > 0)
    std::printf("skipped steps     %lld (non-finite or spiking loss: no update)\n",
                static_cast<long long>(r.skipped_steps));
  if (r.stopped)
    std::printf("stopped           by %s after step %lld; %s\n", r.stop_signal.c_str(), static_cast<long long>(r.steps),
                r.resume.last_checkpoint.empty() ? "nothing saved (checkpoint.dir is empty)"
                                                 : "the same command resumes (validation skipped)");
  std::printf(
      "plan vs measured  step %.4f s planned, %.4f s measured; memory %s planned, %s measured (rank 0's peak); "
      "GEMM FLOP per step %.6g planned, %.6g counted\n",
      r.profile.planned_step_seconds, r.profile.step_seconds, moe::human_bytes(r.profile.planned_memory_bytes).c_str(),
      moe::human_bytes(r.profile.peak_tensor_bytes).c_str(), r.profile.planned_flops_per_step,
      r.profile.gemm_flops_per_step);
  if (cfg.device != moe::DeviceKind::cpu)
    std::printf("host <-> device   busiest step of rank 0: %s\n", r.traffic.step_traffic_sites.c_str());
  if (cfg.device == moe::DeviceKind::cuda && cfg.precision == moe::Precision::fp8)
    std::printf("fp8 GEMMs         %lld reference fallbacks (cuBLASLt refused the shape; 0 expected)\n",
                static_cast<long long>(moe::ops::fp8_reference_fallbacks()));
  if (cfg.parallel.pp > 1)
    std::printf(
        "pipeline bubble   %.1f%% of the schedule measured (mean over ranks), %.1f%% for %s with %lld equal "
        "stages and %lld micro-batches\n",
        100 * r.profile.bubble, 100 * r.profile.ideal_bubble,
        cfg.parallel.schedule == moe::PipeSchedule::dualpipev ? "DualPipeV (forward, input and weight units equal)"
        : cfg.parallel.virtual_stages > 1
            ? fmt::format("interleaved 1F1B ({} chunks per stage)", cfg.parallel.virtual_stages).c_str()
            : "1F1B",
        static_cast<long long>(cfg.parallel.pp), static_cast<long long>(cfg.train.grad_accum));
  std::printf("%s", r.cost_report.c_str());
}

// A checkpoint file, or a run directory's latest.
std::string resolve_checkpoint(const std::string& path) {
  if (!std::filesystem::is_directory(path)) return path;
  const auto latest = moe::ckpt::latest(path);
  if (!latest) throw moe::CheckpointError(fmt::format("{}: no latest checkpoint in this directory", path));
  return *latest;
}

int run_inspect(const std::string& given) {
  const std::string path = resolve_checkpoint(given);
  const auto meta = moe::read_run_meta(path);
  std::printf(
      "%s\nformat version %lld, step %lld, seed %llu, written by %s\ntokens %.0f, wall %.2f s, device-hours %.6f, "
      "last loss %.4f, validation loss %.4f\n",
      path.c_str(), static_cast<long long>(moe::ckpt::kFormatVersion), static_cast<long long>(meta.step),
      static_cast<unsigned long long>(meta.seed), meta.layout.c_str(), meta.cost.tokens, meta.wall_seconds,
      meta.device_hours, meta.last_loss, meta.val_loss);
  int bad = 0;
  for (const auto& d : moe::ckpt::inspect(path)) {
    std::printf("  %-64s %-14s %s %s\n", d.name.c_str(), moe::shape_str(d.shape).c_str(), d.dtype.c_str(),
                d.checksum_ok ? "checksum ok" : ("CHECKSUM FAILED: " + d.error).c_str());
    bad += !d.checksum_ok;
  }
  std::printf("config:\n%s\n", meta.config_yaml.c_str());
  if (bad) throw moe::CheckpointError(fmt::format("{}: {} datasets fail their checksum", path, bad));
  return 0;
}

int run_export(const std::string& given, const std::string& format, const std::string& out,
               const std::string& tokenizer, bool with_mtp, const std::string& lora) {
  if (format != "safetensors")
    throw moe::ConfigError(fmt::format("moe export: --format {}: only safetensors is supported", format));
  const std::string path = resolve_checkpoint(given);
  const auto r = moe::export_safetensors(path, out, tokenizer, with_mtp,
                                         lora == "peft" ? moe::LoraExport::peft : moe::LoraExport::merge);
  std::printf("moe export: %s -> %s (%zu tensors, %s) and %s\n", path.c_str(), r.safetensors.c_str(), r.tensors,
              moe::human_bytes(r.bytes).c_str(), r.config.c_str());
  if (r.adapted > 0 && r.adapter.empty())
    std::printf("moe export: %zu LoRA adapters merged into their projections (--lora peft keeps them apart)\n",
                r.adapted);
  if (!r.adapter.empty())
    std::printf("moe export: %zu LoRA adapters -> %s (PEFT: PeftModel.from_pretrained(base, '%s'))\n", r.adapted,
                r.adapter.c_str(), r.adapter.c_str());
  if (r.tokenizer.empty()) std::printf("moe export: no tokenizer (the run's data.dir has none; --tokenizer PATH)\n");
  else std::printf("moe export: tokenizer %s\n", r.tokenizer.c_str());
  return 0;
}

// Under mpirun the ranks share the reading; every check is each rank's own and the same on
// all, so rank 0 alone reports.
int run_import(int argc, char** argv, const std::string& dir, const std::string& out, double memory_mb) {
  std::signal(SIGXFSZ, SIG_IGN);  // a full disk fails the write with an error (as run_train)
  moe::MpiSession mpi(&argc, &argv);
  moe::MpiCommunicator world;
  moe::ImportResult r;
  try {
    r = moe::import_hf(dir, out, world, memory_mb * 1e6);
  } catch (const moe::Error& e) {
    moe::print_error(e.what());
    return 2;
  }
  if (world.rank() != 0) return 0;
  std::printf("moe import: %s -> %s (%zu tensors, %s) and %s\n", dir.c_str(), r.checkpoint.c_str(), r.tensors,
              moe::human_bytes(r.bytes).c_str(), r.config.c_str());
  for (const auto& s : r.skipped) std::printf("moe import: left out %s\n", s.c_str());
  std::printf("moe import: fine-tune with --set checkpoint.init_from=%s (the model section of %s)\n",
              r.checkpoint.c_str(), r.config.c_str());
  return 0;
}

void print_prepared(const Config& cfg, const moe::data::PrepareReport& r);

// Under mpirun the ranks share the work (data/prepare.h); rank 0 reports. A rank's failure
// (the others may wait in a collective) takes the job down with its line.
int run_prepare(int argc, char** argv, const std::string& path, const std::vector<std::string>& sets, bool force) {
  std::signal(SIGXFSZ, SIG_IGN);  // a full disk fails the write with an error (as run_train)
  moe::MpiSession mpi(&argc, &argv);
  moe::MpiCommunicator world;
  Config cfg;
  try {
    cfg = moe::load_config(path, sets);  // (every rank alike)
  } catch (const moe::Error& e) {
    if (world.rank() == 0) moe::print_error(e.what());
    return 2;
  }
  const auto meta = std::filesystem::path(cfg.data.dir) / "meta.json";
  if (!force && std::filesystem::exists(meta)) {
    if (world.rank() == 0)
      std::cout << "moe data prepare: " << cfg.data.dir << " is prepared already (--force to redo)\n";
    return 0;
  }
  try {
    const auto r = moe::data::prepare({.corpus = cfg.data.corpus,
                                       .out_dir = cfg.data.dir,
                                       .vocab_size = cfg.model.vocab_size,
                                       .val_fraction = cfg.data.val_fraction,
                                       .seed = static_cast<std::uint64_t>(cfg.train.seed),
                                       .tokenizer = cfg.data.tokenizer,
                                       .filters = cfg.data.filters,
                                       .allow_other_files = force,
                                       .min_val_tokens = static_cast<std::uint64_t>(cfg.model.seq_len + 1),
                                       .chat = cfg.data.chat,
                                       .align = cfg.model.seq_len,
                                       .tokenizer_sample_bytes = std::uint64_t(cfg.data.tokenizer_sample_mb) << 20,
                                       .sort_bytes = std::uint64_t(cfg.data.sort_mb) << 20},
                                      &world);
    if (world.rank() == 0) print_prepared(cfg, r);
    return 0;
  } catch (const std::exception& e) {
    const bool input = dynamic_cast<const moe::Error*>(&e) != nullptr;
    if (world.size() == 1) {
      moe::print_error(e.what());
      return input ? 2 : 1;
    }
    moe::print_rank_error(world.rank(), e.what());
    MPI_Abort(MPI_COMM_WORLD, input ? 2 : 1);
    return input ? 2 : 1;
  }
}

void print_prepared(const Config& cfg, const moe::data::PrepareReport& r) {
  if (r.resumed_scans + r.resumed_encodes > 0)
    std::printf("moe data prepare: resumed: %lld of %lld files were scanned and %lld encoded before\n",
                static_cast<long long>(r.resumed_scans), static_cast<long long>(r.files),
                static_cast<long long>(r.resumed_encodes));
  if (r.chat)
    std::printf(
        "moe data prepare: chat data: %llu of the training tokens are targets, %lld conversations cut to "
        "model.seq_len = %lld\n",
        static_cast<unsigned long long>(r.target_tokens), static_cast<long long>(r.truncated),
        static_cast<long long>(cfg.model.seq_len));
  else std::printf("moe data prepare: %s\n", r.filters.text().c_str());
  std::printf(
      "moe data prepare: %lld documents (%lld held out) -> %s: %llu train / %llu validation tokens, vocabulary "
      "%lld, unigram entropy %.4f nats/token\n",
      static_cast<long long>(r.documents), static_cast<long long>(r.val_documents), cfg.data.dir.c_str(),
      static_cast<unsigned long long>(r.train_tokens), static_cast<unsigned long long>(r.val_tokens),
      static_cast<long long>(cfg.model.vocab_size), r.unigram_entropy);
}

// --dry-run: what the run would be, from the validated config alone; nothing is allocated.
void print_dry_run(const Config& cfg, const moe::Layout& l, const moe::Cluster& c) {
  const auto& m = cfg.model;
  const auto plan = moe::make_plan(cfg, c, l);
  const auto& mem = plan.memory;
  const std::int64_t seqs = l.dp * cfg.train.grad_accum * cfg.train.micro_batch;
  std::printf(
      "dry run: %s on %d ranks: pp %d x dp %d x tp %d, ep %d, zero %lld\n"
      "parameters        %lld total, %lld active per token (routed experts %lld, %lld per rank)\n"
      "per rank          %s: weights %s, gradients %s, optimizer state %s, activations %s, backward workspace %s, "
      "communication buffers %s (moe plan has the step time)\n"
      "batch             %lld sequences x %lld tokens = %lld tokens per step, %lld steps\n"
      "no training (--dry-run)\n",
      cfg.source.c_str(), l.world(), l.pp, l.dp, l.tp, l.ep, static_cast<long long>(cfg.parallel.zero),
      static_cast<long long>(moe::total_parameters(m)), static_cast<long long>(moe::active_parameters(m)),
      static_cast<long long>(moe::expert_parameters(m)), static_cast<long long>(moe::expert_parameters(m) / l.ep),
      moe::human_bytes(mem.total()).c_str(), moe::human_bytes(mem.weights).c_str(),
      moe::human_bytes(mem.gradients).c_str(), moe::human_bytes(mem.optimizer).c_str(),
      moe::human_bytes(mem.activations).c_str(), moe::human_bytes(mem.workspace).c_str(),
      moe::human_bytes(mem.buffers).c_str(), static_cast<long long>(seqs), static_cast<long long>(m.seq_len),
      static_cast<long long>(seqs * m.seq_len), static_cast<long long>(cfg.train.steps));
}

// `moe plan`: --layout "pp=16,ep=64,zero=1" as parallel.* overrides.
std::vector<std::string> layout_overrides(const std::string& layout) {
  std::vector<std::string> out;
  std::stringstream in(layout);
  for (std::string kv; std::getline(in, kv, ',');) {
    const auto eq = kv.find('=');
    const std::string key = kv.substr(0, eq);
    if (eq == std::string::npos || (key != "pp" && key != "dp" && key != "tp" && key != "ep" && key != "zero"))
      throw moe::ConfigError(
          fmt::format("--layout {}: '{}' is not KEY=N with KEY one of pp, dp, tp, ep, zero", layout, kv));
    out.push_back("parallel." + kv);
  }
  return out;
}

struct PlanArgs {
  std::string cluster, layout;
  int devices = -1, top = 10;  // devices -1: not given
  bool search = false, recompute = false;
  moe::PlanOptions options;
};

int run_plan(const std::string& path, std::vector<std::string> sets, const PlanArgs& a) {
  if (!a.cluster.empty()) sets.push_back("cost.cluster=" + a.cluster);
  if (a.recompute) sets.push_back("train.recompute=true");
  const auto from_layout = layout_overrides(a.layout);
  sets.insert(sets.end(), from_layout.begin(), from_layout.end());
  const Config cfg = moe::load_config(path, sets);
  const auto& p = cfg.parallel;
  if (a.devices == 0 || a.devices < -1)
    throw moe::ConfigError(fmt::format("moe plan: --devices {}: give a positive number of devices", a.devices));
  const int devices = a.devices > 0 ? a.devices : p.dp > 0 ? static_cast<int>(p.pp * p.dp * p.tp) : 0;
  if (devices <= 0)
    throw moe::ConfigError(
        fmt::format("{}: moe plan: how many devices? give --devices N (or a layout with dp set)", path));
  moe::Cluster cluster = moe::load_cluster(cfg);
  if (cluster.calibrate) {  // local-cpu: this process measures the GEMM rate and a copy's bandwidth
    moe::SelfCommunicator self;
    moe::calibrate(cluster, self);
  }
  if (a.search) {
    const auto plans = moe::search_layouts(cfg, cluster, devices, a.options);
    if (plans.empty())
      throw moe::ConfigError(
          fmt::format("{}: no layout of {} devices fits {} GB per device on {}; try --recompute or "
                      "more devices",
                      path, devices, cluster.memory_gb, cluster.name));
    std::printf("%zu layouts of %d devices fit on %s; the %d cheapest (cost for train.target_tokens = %.4g):\n",
                plans.size(), devices, cluster.name.c_str(), std::min<int>(a.top, static_cast<int>(plans.size())),
                cfg.train.target_tokens);
    std::printf("  %-40s %12s %12s %12s %14s %14s\n", "layout", "step", "memory", "MFU", "device-hours", "cost");
    const double peak = cluster.peak_tflops(cfg.precision) * 1e12;
    for (std::size_t i = 0; i < plans.size() && i < static_cast<std::size_t>(a.top); ++i) {
      const auto& q = plans[i];
      const double dh = q.device_hours(cfg.train.target_tokens);
      std::printf("  %-40s %10.4g s %9.2f GB %11.1f%% %14.4g %13.4g$\n", moe::layout_name(q).c_str(), q.time.step(),
                  q.memory.total() / 1e9, 100 * q.mfu(peak), dh, dh * cluster.price_per_device_hour);
    }
    std::printf("\n%s", moe::plan_text(plans.front(), cfg, cluster, a.options).c_str());
    return 0;
  }
  const moe::Layout layout = moe::resolve_layout(cfg, devices);
  const auto plan = moe::make_plan(cfg, cluster, layout, a.options);
  std::printf("%s", moe::plan_text(plan, cfg, cluster, a.options).c_str());
  if (!plan.fits())
    throw moe::ConfigError(
        fmt::format("{}: layout {} does not fit: {:.2f} GB per device on stage {} > {} GB of {}; try "
                    "{}{}more pp or ep, or moe plan --search",
                    path, moe::layout_name(plan), plan.memory.total() / 1e9, plan.memory_stage, cluster.memory_gb,
                    cluster.name, cfg.train.recompute ? "" : "--recompute, ", plan.zero == 1 ? "" : "zero=1, "));
  return 0;
}

int run_train(int argc, char** argv, const std::string& path, const std::vector<std::string>& sets, bool print_config,
              bool dry_run) {
  // A full disk or a file-size limit must fail the write (and the save) with an error, not
  // kill the process mid-file: the previous checkpoint stays the latest either way.
  std::signal(SIGXFSZ, SIG_IGN);
  moe::MpiSession mpi(&argc, &argv);
  // SIGTERM (mpirun forwards it; schedulers send it before preempting): finish the step,
  // checkpoint, exit 0.
  std::signal(SIGTERM, [](int sig) { moe::request_stop(sig); });
  std::signal(SIGINT, [](int sig) { moe::request_stop(sig); });  // Ctrl-C: the same orderly stop
  moe::MpiCommunicator world;
  Config cfg;
  try {
    cfg = moe::load_config(path, sets);  // every rank validates; all fail alike, before any collective
    const moe::Layout layout = moe::trainable_layout(cfg, world);
    const moe::Cluster cluster = moe::load_cluster(cfg);  // an unknown cluster fails here, before any compute
    if (dry_run) {
      if (world.rank() == 0) print_dry_run(cfg, layout, cluster);
      return 0;
    }
  } catch (const moe::Error& e) {
    moe::print_error(e.what());
    return 2;
  }
  try {
    if (world.rank() == 0 && print_config) std::cout << moe::config_to_yaml(cfg) << std::flush;
    const auto result = moe::train(cfg, world);
    if (world.rank() == 0) print_summary(cfg, result, world.size());
    return 0;  // also when stopped by SIGTERM: checkpointed, what a preempting scheduler expects
  } catch (const moe::TrainingError& e) {
    // Decided from all-reduced values (e.g. too many skipped steps): every rank throws it at
    // the same step, so rank 0 reports it once and every rank exits non-zero.
    moe::print_error(e.what());
    return 3;
  } catch (const moe::ConfigError& e) {
    // Config errors found while building the trainer (e.g. a train.freeze pattern that names
    // nothing) depend only on the config, so every rank throws the same one at the same
    // point, outside any collective: report once, like the ones above.
    moe::print_error(e.what());
    return 2;
  } catch (const std::exception& e) {
    // A rank's own failure (the others may be waiting in a collective): its line, once per
    // job, then the whole job down (quietly with scripts/mpi-env.sh); 2 for bad input.
    const bool input = dynamic_cast<const moe::Error*>(&e) != nullptr;
    moe::print_rank_error(world.rank(), e.what());
    if (world.size() > 1) MPI_Abort(MPI_COMM_WORLD, input ? 2 : 1);
    return input ? 2 : 1;
  }
}

}  // namespace

namespace {

// Every subcommand's arguments, as CLI11 fills them; the subcommands to tell which was given.
struct Args {
  std::string config_path, ckpt_path, export_format = "safetensors", export_lora = "merge", export_out,
                                      export_tokenizer, import_dir, import_out;
  std::vector<std::string> sets;
  bool print_config = false, fresh = false, dry_run = false, force = false, export_mtp = false;
  double import_memory_mb = 1024;
  PlanArgs plan;
  moe::InferenceArgs inference;
  CLI::App *generate = nullptr, *eval = nullptr;
  CLI::App *train = nullptr, *prepare = nullptr, *show = nullptr, *reference = nullptr, *plan_cmd = nullptr,
           *info = nullptr, *inspect = nullptr, *exp = nullptr, *imp = nullptr;
};

void add_config_argument(CLI::App* cmd, Args& a, const char* help) {
  cmd->add_option("config", a.config_path, help)->required()->check(CLI::ExistingFile);
  cmd->add_option("--set", a.sets, "override a config key, e.g. --set train.lr=1e-3 (repeatable)")
      ->type_size(1)
      ->allow_extra_args(false);
}

void add_train(CLI::App& app, Args& a) {
  a.train = app.add_subcommand("train", "train a model from a YAML config (launch with mpirun -np N)");
  add_config_argument(a.train, a, "YAML config, e.g. configs/tiny.yaml");
  a.train->add_flag("--print-config", a.print_config, "print the resolved config before training");
  a.train->add_flag("--fresh", a.fresh, "start from scratch even when checkpoint.dir has a latest checkpoint");
  a.train->add_flag("--dry-run", a.dry_run,
                    "validate config, layout and cluster, print parameters and memory per rank, exit");
}

void add_data_and_config(CLI::App& app, Args& a) {
  auto* data = app.add_subcommand("data", "prepare training data");
  data->require_subcommand(1);
  a.prepare = data->add_subcommand("prepare", "train the tokenizer on data.corpus and write token shards to data.dir");
  add_config_argument(a.prepare, a, "YAML config");
  a.prepare->add_flag("--force", a.force,
                      "prepare again even when data.dir has meta.json, or beside files it did not write (left alone)");

  auto* config = app.add_subcommand("config", "inspect configs");
  config->require_subcommand(1);
  a.show = config->add_subcommand("show", "validate a config and print it resolved (every key)");
  add_config_argument(a.show, a, "YAML config");
  a.reference = config->add_subcommand("reference", "print every key as a Markdown table (README's reference)");
  a.info = app.add_subcommand("info", "print how this moe was built and what it can see");
}

void add_plan(CLI::App& app, Args& a) {
  auto* plan = a.plan_cmd = app.add_subcommand("plan",
                                               "memory per device, step time and cost of a config on a cluster, or "
                                               "the cheapest layouts (--search); no training");
  add_config_argument(plan, a, "YAML config, e.g. configs/deepseek-v3.yaml");
  PlanArgs& p = a.plan;
  plan->add_option("--cluster", p.cluster, "cluster NAME or .yaml (default: the config's cost.cluster)");
  plan->add_option("--devices", p.devices, "number of devices (default: pp x dp x tp of the layout)");
  plan->add_option("--layout", p.layout, "parallel keys, e.g. pp=16,ep=64,zero=1 (the rest from the config)");
  plan->add_flag("--search", p.search, "rank every valid layout of --devices by cost, among those that fit");
  plan->add_option("--top", p.top, "layouts listed by --search")->check(CLI::PositiveNumber);
  plan->add_flag("--recompute", p.recompute, "plan with full activation recomputation (train.recompute=true)");
  plan->add_option("--overlap", p.options.overlap, "share of EP and DP traffic hidden behind compute (0 to 1)")
      ->check(CLI::Range(0.0, 1.0));
  plan->add_option("--imbalance", p.options.imbalance,
                   "worst-case memory with the most loaded rank receiving this many times the balanced expert rows "
                   "(default: what model.capacity_factor allows, or routing collapse)")
      ->check(CLI::Range(1.0, 1e6));
}

void add_checkpoint_commands(CLI::App& app, Args& a) {
  auto* ckpt = app.add_subcommand("ckpt", "checkpoints");
  ckpt->require_subcommand(1);
  a.inspect =
      ckpt->add_subcommand("inspect", "names, shapes, dtypes, step, config and checksum status of a checkpoint");
  a.inspect->add_option("path", a.ckpt_path, "a step_N.h5 file, or a run directory (its latest)")
      ->required()
      ->check(CLI::ExistingPath);
  a.exp = app.add_subcommand("export", "a checkpoint's weights as safetensors + config.json (Hugging Face names)");
  a.exp->add_option("path", a.ckpt_path, "a step_N.h5 file, or a run directory (its latest)")
      ->required()
      ->check(CLI::ExistingPath);
  a.exp->add_option("--format", a.export_format, "output format (safetensors)");
  a.exp->add_option("out", a.export_out, "output directory")->required();
  a.exp->add_flag("--mtp", a.export_mtp,
                  "include the multi-token-prediction layers, as DeepSeek's release has them (transformers ignores "
                  "them)");
  a.exp
      ->add_option("--lora", a.export_lora,
                   "LoRA adapters: merge (into their projections; default) or peft (the base model as it was, and "
                   "OUT/adapter for Hugging Face PEFT)")
      ->check(CLI::IsMember({"merge", "peft"}));
  a.exp->add_option("--tokenizer", a.export_tokenizer,
                    "a tokenizer.model or tokenizer.json to export with it (default: the run's data.dir's)");
  a.imp = app.add_subcommand("import",
                             "a Hugging Face model directory (DeepSeek-V3 architecture: config.json and safetensors) "
                             "as a checkpoint to fine-tune from (checkpoint.init_from)");
  a.imp->add_option("hf_dir", a.import_dir, "the model directory (config.json, model.safetensors[.index.json])")
      ->required()
      ->check(CLI::ExistingDirectory);
  a.imp->add_option("out", a.import_out, "output directory: step_00000000.h5 and config.yaml")->required();
  a.imp
      ->add_option("--memory-mb", a.import_memory_mb,
                   "f32 tensors each rank holds at once, in MB (it streams the rest; under mpirun the ranks share "
                   "the reading)")
      ->check(CLI::NonNegativeNumber);
}

// A misspelt subcommand: one line saying which exist (CLI11 would list every argument).
bool known_subcommand(CLI::App& app, int argc, char** argv) {
  if (argc <= 1 || argv[1][0] == '-') return true;
  std::string names;
  bool known = false;
  for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
    known |= sub->get_name() == argv[1];
  }
  if (!known) moe::print_error(fmt::format("'{}' is not a subcommand; one of {} (moe --help)", argv[1], names));
  return known;
}

int run_subcommand(Args& a, int argc, char** argv) {
  if (*a.train) {
    if (a.fresh) a.sets.push_back("checkpoint.resume=false");
    return run_train(argc, argv, a.config_path, a.sets, a.print_config, a.dry_run);
  }
  if (*a.imp) return run_import(argc, argv, a.import_dir, a.import_out, a.import_memory_mb);
  if (*a.prepare) return run_prepare(argc, argv, a.config_path, a.sets, a.force);
  // The other subcommands run in one process: under mpirun, rank 0 does the work, prints and
  // decides the exit code; the others leave at once, so there is one output, one error line
  // and no race to exit first.
  if (moe::job_rank() != 0) return 0;
  if (*a.inspect) return run_inspect(a.ckpt_path);
  if (*a.generate) return moe::run_generate(a.inference, resolve_checkpoint(a.inference.path));
  if (*a.eval) return moe::run_eval(a.inference, resolve_checkpoint(a.inference.path));
  if (*a.exp)
    return run_export(a.ckpt_path, a.export_format, a.export_out, a.export_tokenizer, a.export_mtp, a.export_lora);
  if (*a.plan_cmd) return run_plan(a.config_path, a.sets, a.plan);
  if (*a.show) std::cout << moe::config_to_yaml(moe::load_config(a.config_path, a.sets));
  if (*a.reference) std::cout << moe::config_reference_markdown();
  if (*a.info)
    std::cout << "moe " << MOE_VERSION << "\nCUDA backend: " << (moe::built_with_cuda() ? "built" : "not built")
              << "\nCUDA devices: " << moe::cuda_device_count() << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moe: pre-train and fine-tune Mixture-of-Experts language models"};
  app.require_subcommand(1);
  Args a;
  add_train(app, a);
  add_data_and_config(app, a);
  add_plan(app, a);
  add_checkpoint_commands(app, a);
  a.generate = moe::add_generate(app, a.inference);
  a.eval = moe::add_eval(app, a.inference);
  if (!known_subcommand(app, argc, argv)) return 2;
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line like every other error, instead of CLI11's two.
    const std::string sub = argc > 1 && argv[1][0] != '-' ? std::string(argv[1]) + " " : "";
    moe::print_error(fmt::format("{} (moe {}--help lists the arguments)", e.what(), sub));
    return 2;
  }
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] %v");  // plain: logs go to files under mpirun
  try {
    return run_subcommand(a, argc, argv);
  } catch (const std::exception& e) {  // ours, or a library's (a file system refusing a path, ...): one line
    moe::print_error(e.what());
    return 2;
  }
}
