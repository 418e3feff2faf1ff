// Checkpoint save and load throughput against plain POSIX I/O of the same bytes on the same
// disk, in one run under mpirun. Save: every rank's slices written (chunked, Fletcher32),
// fsync, rename and the latest pointer, against each rank pwrite()ing as many bytes to its
// own file in 8 MiB blocks and fsyncing it. Load: every rank's slices read and verified,
// against each rank pread()ing the very byte ranges of the checkpoint file its load reads
// (ckpt::read_extents) into memory of that size (a loader must put them somewhere; buffers
// are touched first, as tensors are). Loads are timed from a warm page cache and cold (the
// file's cached pages dropped with posix_fadvise first: a resume after a restart). Best of
// 3 rounds each. For information, the warm POSIX read into one reused buffer (cache-
// resident, bytes discarded) is printed too. With --stall: what a save costs the training
// steps, synchronous against checkpoint.async (20 steps, a save every 4 and one at the end:
// the seconds a rank's steps spent in saves, per save, and the run's wall time; best of 2).
// Usage: mpirun -np P build/bench/bench_checkpoint_io [dir] [key=value ...]
//        mpirun -np P build/bench/bench_checkpoint_io --stall [dir] [key=value ...]
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/train.h"

using namespace moe;

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Drops the page cache of a written (fsynced, so clean) file.
void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Seconds for this rank to write `bytes` from `mem` to path (pwrite, 8 MiB blocks, fsync).
double posix(const std::string& path, const char* mem, std::size_t bytes) {
  constexpr std::size_t kBlock = 8u << 20;
  const double t0 = now();
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  for (std::size_t at = 0; at < bytes;) {
    const ssize_t r = ::pwrite(fd, mem + at, std::min(kBlock, bytes - at), static_cast<off_t>(at));
    if (r <= 0) break;
    at += static_cast<std::size_t>(r);
  }
  ::fsync(fd);
  ::close(fd);
  return now() - t0;
}
}  // namespace

// Over 60 lines by design: a benchmark's protocol read top to bottom (set up, warm up, time
// the rounds, print the ratio), as bench/README.md describes it.
// The training steps' stall per save, without and with checkpoint.async.
void stall(MpiCommunicator& world, const std::string& dir, std::vector<std::string> kv) {
  constexpr int saves = 5;  // steps 4, 8, 12, 16 and the end
  if (world.rank() == 0)
    std::printf(
        "bench checkpoint stall: %d ranks, 20 steps, a save every 4 and at the end, best of 2\n"
        "%-18s %16s %10s\n",
        world.size(), "checkpoint.async", "stall per save", "wall");
  for (const char* async : {"false", "true"}) {
    double best_stall = 1e30, best_wall = 1e30;
    for (int round = 0; round < 2; ++round) {
      if (world.rank() == 0) std::filesystem::remove_all(dir + "/stall");
      world.barrier();
      auto all = kv;
      all.insert(all.end(), {"train.steps=20", "checkpoint.every=4", "checkpoint.keep=2", "train.eval_every=0",
                             "train.log_every=1000", "checkpoint.dir=" + dir + "/stall",
                             std::string("checkpoint.async=") + async});
      const TrainResult r = train(load_config("configs/tiny.yaml", all), world);
      best_stall = std::min(best_stall, r.cost.checkpoint * 3600 / world.size() / saves);
      best_wall = std::min(best_wall, r.wall_seconds);
    }
    if (world.rank() == 0) std::printf("%-18s %14.1f ms %8.2f s\n", async, 1e3 * best_stall, best_wall);
  }
}

int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  spdlog::set_level(spdlog::level::warn);
  const bool stall_mode = argc > 1 && std::string(argv[1]) == "--stall";
  if (stall_mode) --argc, ++argv;
  const std::string dir = argc > 1 ? argv[1] : "bench_ckpt";
  // About 20M parameters: 240 MB of weights and moments.
  std::vector<std::string> kv = {"model.d_model=512",
                                 "model.n_heads=8",
                                 "model.n_kv_heads=4",
                                 "model.ffn_hidden=1536",
                                 "model.n_layers=4",
                                 "model.expert_hidden=384",
                                 "checkpoint.dir=" + dir + "/moe",
                                 "checkpoint.keep=1"};
  for (int i = 2; i < argc; ++i) kv.emplace_back(argv[i]);
  if (stall_mode) {
    stall(world, dir, kv);
    return 0;
  }
  const Config cfg = load_config("configs/tiny.yaml", kv);
  Trainer trainer(cfg, world);
  const std::size_t mine = trainer.checkpoint_bytes_written();
  const double total = world.all_reduce_sum(double(mine));
  std::filesystem::create_directories(dir);
  const std::string raw = dir + "/posix_rank" + std::to_string(world.rank()) + ".bin";
  std::vector<char> mem(mine, 'x');  // what the write peer writes, and (grown) where the read peer reads to

  double save = 1e30, load = 1e30, cold = 1e30, pw = 1e30, pr = 1e30, pcold = 1e30, preuse = 1e30, total_read = 0;
  auto timed = [&](auto&& f) {
    world.barrier();
    const double t0 = now();
    f();
    world.barrier();
    return now() - t0;
  };
  for (int round = 0; round < 3; ++round) {
    std::string path;
    save = std::min(save, timed([&] { path = trainer.save_checkpoint(round + 1); }));
    // The read peer: the same byte ranges of the same file that this rank's load reads.
    const auto extents = trainer.checkpoint_read_extents(path);
    std::size_t reads = 0;
    for (const auto& e : extents) reads += e.second;
    total_read = world.all_reduce_sum(double(reads));
    if (mem.size() < reads) mem.resize(reads, 'x');
    auto posix_read = [&](bool reuse) {
      const int fd = ::open(path.c_str(), O_RDONLY);
      std::size_t at = 0;
      for (const auto& [addr, bytes] : extents) {
        for (std::size_t done = 0; done < bytes;) {
          const ssize_t r =
              ::pread(fd, mem.data() + (reuse ? 0 : at) + done, bytes - done, static_cast<off_t>(addr + done));
          if (r <= 0) break;
          done += static_cast<std::size_t>(r);
        }
        at += bytes;
      }
      ::close(fd);
    };
    load = std::min(load, timed([&] { trainer.load_checkpoint(path); }));
    pr = std::min(pr, timed([&] { posix_read(false); }));
    preuse = std::min(preuse, timed([&] { posix_read(true); }));
    if (world.rank() == 0) evict(path);
    cold = std::min(cold, timed([&] { trainer.load_checkpoint(path); }));
    if (world.rank() == 0) evict(path);
    pcold = std::min(pcold, timed([&] { posix_read(false); }));
    pw = std::min(pw, timed([&] { posix(raw, mem.data(), mine); }));
  }
  if (world.rank() == 0)
    std::printf(
        "bench checkpoint_io: %d ranks, %.1f MB written, %.1f MB read (all ranks), best of 3\n"
        "            moe GB/s   POSIX GB/s   ratio (target >= 0.7)\n"
        "save       %9.2f   %10.2f   %6.2f\nload warm  %9.2f   %10.2f   %6.2f\nload cold  %9.2f   %10.2f   %6.2f\n"
        "(POSIX warm read of the same bytes into one reused buffer, as no loader can: %.2f GB/s)\n",
        world.size(), total / 1e6, total_read / 1e6, total / save / 1e9, total / pw / 1e9, pw / save,
        total_read / load / 1e9, total_read / pr / 1e9, pr / load, total_read / cold / 1e9, total_read / pcold / 1e9,
        pcold / cold, total_read / preuse / 1e9);
  std::filesystem::remove(raw);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_checkpoint_io: %s\n", e.what());
  return 1;
}
