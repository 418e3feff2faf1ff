// The watchdog (issue 11): a thread that ends the job when this rank makes no progress for
// train.watchdog_s seconds, a collective that never completes (a peer died or hangs) or a
// step that never ends. Progress: a step starting, or any communicator operation completing.
//
// Naming the stalled rank (issue 27): every rank's thread writes, each period, a heartbeat
// file in a directory all ranks share (checkpoint.dir/.moe.heartbeat, else one under /tmp:
// one node) with the time of its last progress, its step and its operation. A stalled rank
// made its last progress before everyone waiting for it; a stopped one's file stops being
// written. So when a watchdog fires it reads the others' files and names the rank whose
// progress is oldest, in one line: the stalled rank itself when its thread still runs (a hang
// in compute), else the lowest-numbered of the others, the rest holding back a while so that
// mpirun, ending the job on the first exit, usually shows one line. Then it exits non-zero.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "comm/communicator.h"

namespace moe {

class Watchdog {
 public:
  // Collective over world (rank 0 picks the heartbeat directory). timeout 0: off.
  Watchdog(double timeout_s, Communicator& world, const std::string& checkpoint_dir);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  void beat(std::int64_t step);  // step (1-based) is starting

  // A rank's last heartbeat: when it last made progress (seconds since the epoch), where.
  struct Heartbeat {
    int rank = -1;
    double progress = 0, written = 0;
    std::int64_t step = 0;
    std::string where;
  };

 private:
  void watch();
  void write_heartbeat(double progress_unix, const std::string& where) const;
  [[noreturn]] void report(double idle, const std::string& where, const Heartbeat& stalled);
  double timeout_;
  int rank_, ranks_;
  std::string dir_;  // the heartbeat directory ("" : none, this rank alone)
  std::atomic<double> last_beat_;
  std::atomic<std::int64_t> step_{0};
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace moe
