// The watchdog (issue 11): a thread that ends the job when this rank makes no progress for
// train.watchdog_s seconds, a collective that never completes (a peer died or hangs) or a
// step that never ends. It prints which rank, which step and which operation (from
// comm_activity()), then exits the process non-zero, so mpirun takes the whole job down
// instead of hanging until the allocation runs out. Progress: a step starting, or any
// communicator operation completing.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

namespace moe {

class Watchdog {
 public:
  Watchdog(double timeout_s, int rank);  // timeout 0: off
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  void beat(std::int64_t step);  // step (1-based) is starting

 private:
  void watch();
  double timeout_;
  int rank_;
  std::atomic<double> last_beat_;
  std::atomic<std::int64_t> step_{0};
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace moe
