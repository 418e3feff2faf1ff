#include "trainer/watchdog.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "comm/communicator.h"

namespace moe {
namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

Watchdog::Watchdog(double timeout_s, int rank) : timeout_(timeout_s), rank_(rank), last_beat_(now()) {
  if (timeout_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard lock(m_);
    done_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Watchdog::beat(std::int64_t step) {
  step_.store(step);
  last_beat_.store(now());
}

void Watchdog::watch() {
  const auto period = std::chrono::duration<double>(std::clamp(timeout_ / 4, 0.05, 1.0));
  std::unique_lock lock(m_);
  while (!cv_.wait_for(lock, period, [this] { return done_; })) {
    const CommActivity a = comm_activity();
    const double idle = now() - std::max(last_beat_.load(), a.last_completed);
    if (idle <= timeout_) continue;
    const std::string where = a.op ? fmt::format("inside {} on the {} communicator", a.op, a.label ? a.label : "?")
                                   : std::string("computing, outside any collective");
    std::fprintf(stderr,
                 "moe: watchdog on rank %d: no progress for %.1f s at step %lld, %s; ending the job "
                 "(train.watchdog_s = %g; a peer may have died or hung)\n",
                 rank_, idle, static_cast<long long>(step_.load()), where.c_str(), timeout_);
    std::fflush(stderr);
    std::_Exit(4);  // from any thread; mpirun sees a rank fail and ends the others
  }
}

}  // namespace moe
