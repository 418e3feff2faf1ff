// Checkpoint save and load throughput against plain POSIX I/O of the same bytes on the same
// disk, in one run under mpirun. moe: every rank's slices written (chunked, Fletcher32),
// fsync, rename and the latest pointer; then every rank's slices read and verified. POSIX:
// each rank pwrite()s the bytes it saves to its own file in 8 MiB blocks from memory of that
// size and fsyncs it, and pread()s as many bytes as it loads, from one file every rank reads
// from its start (replicas read the same bytes), into memory of that size (a loader must put
// them somewhere; both buffers are touched first, as tensors are). Loads are timed from
// a warm page cache and cold (the files' cached pages dropped with posix_fadvise first: a
// resume after a restart). Best of 3 rounds each. For information, a warm read into one
// reused 8 MiB buffer (cache-resident, bytes discarded) is printed too.
// Usage: mpirun -np P build/bench/bench_checkpoint_io [dir] [key=value ...]
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

// Seconds for this rank to write `bytes` to path (pwrite, 8 MiB blocks, fsync) or read them.
// Drops the page cache of a written (fsynced, so clean) file.
void evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Seconds for this rank to write `bytes` from `mem` to path (pwrite, 8 MiB blocks, fsync)
// or read them into `mem` (`stride` 0: each block to its place; else into the first
// `stride` bytes again and again).
double posix(const std::string& path, char* mem, std::size_t bytes, bool write, std::size_t stride = 0) {
  constexpr std::size_t kBlock = 8u << 20;
  const double t0 = now();
  const int fd = write ? ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644) : ::open(path.c_str(), O_RDONLY);
  for (std::size_t at = 0; at < bytes;) {
    const std::size_t n = std::min(kBlock, bytes - at);
    char* p = mem + (stride ? 0 : at);
    const ssize_t r = write ? ::pwrite(fd, p, n, static_cast<off_t>(at)) : ::pread(fd, p, n, static_cast<off_t>(at));
    if (r <= 0) break;
    at += static_cast<std::size_t>(r);
  }
  if (write) ::fsync(fd);
  ::close(fd);
  return now() - t0;
}
}  // namespace

int main(int argc, char** argv) try {
  MpiSession mpi(&argc, &argv);
  MpiCommunicator world;
  spdlog::set_level(spdlog::level::warn);
  const std::string dir = argc > 1 ? argv[1] : "bench_ckpt";
  // About 20M parameters: 240 MB of weights and moments.
  std::vector<std::string> kv = {"model.d_model=512", "model.n_heads=8", "model.n_kv_heads=4", "model.ffn_hidden=1536",
                                 "model.n_layers=4", "model.expert_hidden=384", "checkpoint.dir=" + dir + "/moe",
                                 "checkpoint.keep=1"};
  for (int i = 2; i < argc; ++i) kv.emplace_back(argv[i]);
  const Config cfg = load_config("configs/tiny.yaml", kv);
  Trainer trainer(cfg, world);
  const std::size_t mine = trainer.checkpoint_bytes_written(), reads = trainer.checkpoint_bytes_read();
  const double total = world.all_reduce_sum(double(mine)), total_read = world.all_reduce_sum(double(reads));
  std::filesystem::create_directories(dir);
  // Reads: one file all ranks read from its start, as ranks holding replicas of a tensor
  // read the same bytes of the checkpoint (the page cache serves the second one).
  const std::string raw = dir + "/posix_rank" + std::to_string(world.rank()) + ".bin", raw_read = dir + "/posix_read.bin";
  std::vector<char> mem(std::max(mine, reads), 'x');
  std::size_t most = reads;
  MPI_Allreduce(&reads, &most, 1, MPI_UINT64_T, MPI_MAX, world.comm());
  if (world.rank() == 0) {
    std::vector<char> all(most, 'x');
    posix(raw_read, all.data(), all.size(), true);
  }
  world.barrier();

  double save = 1e30, load = 1e30, cold = 1e30, pw = 1e30, pr = 1e30, pcold = 1e30, preuse = 1e30;
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
    load = std::min(load, timed([&] { trainer.load_checkpoint(path); }));
    if (world.rank() == 0) evict(path);
    cold = std::min(cold, timed([&] { trainer.load_checkpoint(path); }));
    pw = std::min(pw, timed([&] { posix(raw, mem.data(), mine, true); }));
    pr = std::min(pr, timed([&] { posix(raw_read, mem.data(), reads, false); }));
    preuse = std::min(preuse, timed([&] { posix(raw_read, mem.data(), reads, false, 8u << 20); }));
    if (world.rank() == 0) evict(raw_read);
    pcold = std::min(pcold, timed([&] { posix(raw_read, mem.data(), reads, false); }));
  }
  if (world.rank() == 0)
    std::printf("bench checkpoint_io: %d ranks, %.1f MB written, %.1f MB read (all ranks), best of 3\n"
                "            moe GB/s   POSIX GB/s   ratio (target >= 0.7)\n"
                "save       %9.2f   %10.2f   %6.2f\nload warm  %9.2f   %10.2f   %6.2f\nload cold  %9.2f   %10.2f   %6.2f\n"
                "(POSIX warm read into one reused 8 MiB buffer, bytes discarded: %.2f GB/s)\n",
                world.size(), total / 1e6, total_read / 1e6, total / save / 1e9, total / pw / 1e9, pw / save,
                total_read / load / 1e9, total_read / pr / 1e9, pr / load, total_read / cold / 1e9,
                total_read / pcold / 1e9, pcold / cold, total_read / preuse / 1e9);
  world.barrier();
  if (world.rank() == 0) std::filesystem::remove(raw_read);
  std::filesystem::remove(raw);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_checkpoint_io: %s\n", e.what());
  return 1;
}
