#include "trainer/watchdog.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <vector>

namespace moe {
namespace {
namespace fs = std::filesystem;

double steady() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
double wall() { return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count(); }

std::string heartbeat_file(const std::string& dir, int rank) { return fmt::format("{}/rank_{:05d}", dir, rank); }

// Every rank's last heartbeat that can be read (a rank that never wrote one is left out).
std::vector<Watchdog::Heartbeat> read_heartbeats(const std::string& dir, int ranks) {
  std::vector<Watchdog::Heartbeat> all;
  for (int r = 0; r < ranks && !dir.empty(); ++r) {
    std::ifstream in(heartbeat_file(dir, r));
    Watchdog::Heartbeat h;
    if (!(in >> h.progress >> h.written >> h.step) || !std::getline(in >> std::ws, h.where)) continue;
    h.rank = r;
    all.push_back(h);
  }
  return all;
}

// The directory all ranks write their heartbeats into, as rank 0 names it.
std::string heartbeat_dir(Communicator& world, const std::string& checkpoint_dir) {
  std::string dir;
  if (world.rank() == 0) {
    dir = !checkpoint_dir.empty() ? (fs::path(checkpoint_dir) / ".moe.heartbeat").string()
                                  : fmt::format("{}/moe-heartbeat-{}", fs::temp_directory_path().string(), getpid());
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) dir.clear();  // no shared place: each rank speaks for itself
  }
  return world.broadcast_text(dir, 0);
}
}  // namespace

Watchdog::Watchdog(double timeout_s, Communicator& world, const std::string& checkpoint_dir)
    : timeout_(timeout_s), rank_(world.rank()), ranks_(world.size()), last_beat_(steady()) {
  if (timeout_ <= 0) return;
  dir_ = ranks_ > 1 ? heartbeat_dir(world, checkpoint_dir) : "";
  thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(m_);
    done_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (dir_.empty()) return;
  std::error_code ec;
  fs::remove(heartbeat_file(dir_, rank_), ec);
  fs::remove(dir_, ec);  // once the last rank's file is gone
}

void Watchdog::beat(std::int64_t step) {
  step_.store(step);
  last_beat_.store(steady());
}

void Watchdog::write_heartbeat(double progress_unix, const std::string& where) const {
  if (dir_.empty()) return;
  const std::string file = heartbeat_file(dir_, rank_), tmp = file + ".tmp";
  {
    std::ofstream out(tmp);
    out << fmt::format("{:.3f} {:.3f} {}\n{}\n", progress_unix, wall(), step_.load(), where);
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);  // readers see a whole file or the previous one
}

void Watchdog::watch() {
  const double period = std::clamp(timeout_ / 4, 0.05, 1.0);
  std::unique_lock lock(m_);
  double fired_at = 0;  // when this rank's own timeout passed (0: not yet)
  double tick = steady();
  while (!cv_.wait_for(lock, std::chrono::duration<double>(period), [this] { return done_; })) {
    // A rank stopped (SIGSTOP) and woken again (mpirun sends SIGCONT before ending a job)
    // would call itself stalled: a gap much longer than the period says it was, so it waits.
    const bool woken = steady() - tick > period + timeout_ / 2;
    tick = steady();
    const CommActivity a = comm_activity();
    const double last = std::max(last_beat_.load(), a.last_completed), idle = steady() - last;
    const std::string where = a.op ? fmt::format("inside {} on the {} communicator", a.op, a.label ? a.label : "?")
                                   : std::string("computing, outside any collective");
    write_heartbeat(wall() - idle, where);
    if (idle <= timeout_ || woken) {
      fired_at = 0;
      continue;
    }
    if (fired_at == 0) fired_at = steady();
    // The rank whose progress is oldest stalled the others.
    Heartbeat stalled{
        .rank = rank_, .progress = wall() - idle, .written = wall(), .step = step_.load(), .where = where};
    bool reported = false;  // a rank has reported (its heartbeat's step -1): the job is ending
    for (const Heartbeat& h : read_heartbeats(dir_, ranks_)) {
      reported = reported || h.step < 0;
      if (h.progress < stalled.progress) stalled = h;
    }
    // One reporter: the stalled rank if its thread still writes, else the lowest other rank;
    // the rest wait a while (mpirun ends the job on the first exit), longer once one reported.
    const bool stalled_alive = stalled.rank == rank_ || wall() - stalled.written < 3 * period;
    int reporter = stalled.rank;
    if (!stalled_alive) reporter = stalled.rank == 0 ? 1 : 0;
    if ((reporter != rank_ || reported) && steady() - fired_at < (reported ? 3 : 1) * timeout_) continue;
    report(idle, where, stalled);
  }
}

void Watchdog::report(double idle, const std::string& where, const Heartbeat& stalled) {
  const std::int64_t step = step_.load();
  step_.store(-1);  // the heartbeat now says "reported": the others hold back
  write_heartbeat(wall() - idle, where);
  const std::string culprit =
      stalled.rank == rank_
          ? std::string("this rank stalled the others")
          : fmt::format(
                "rank {} stalled the others: no progress for {:.1f} s, at step {}, {}{}", stalled.rank,
                wall() - stalled.progress, stalled.step, stalled.where,
                wall() - stalled.written > timeout_ / 2 ? " (its watchdog has stopped too: stopped or killed?)" : "");
  std::fprintf(stderr,
               "moe: watchdog on rank %d: no progress for %.1f s at step %lld, %s; %s; ending the job "
               "(train.watchdog_s = %g)\n",
               rank_, idle, static_cast<long long>(step), where.c_str(), culprit.c_str(), timeout_);
  std::fflush(stderr);
  std::_Exit(4);  // from any thread; mpirun sees a rank fail and ends the others
}

}  // namespace moe
