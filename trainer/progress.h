// A progress bar with ETA on a terminal (stdout a TTY: a person watching); nothing otherwise,
// so logs stay plain lines. Open MPI gives every rank a pseudo-terminal whatever mpirun's own
// output is (a file, a pipe), so under an MPI launcher the bar is off unless MOE_PROGRESS=1
// asks for it. Log lines clear it first and it redraws.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace moe {

class Progress {
 public:
  Progress(bool enabled, std::int64_t first, std::int64_t last)
      : on_(enabled && wanted()), first_(first), last_(last) {}
  // Before a log line: erase the bar.
  void clear() {
    if (on_ && drawn_) std::fputs("\r\033[K", stdout), drawn_ = false;
  }
  // After step `step` (1-based) at `seconds` since the first.
  void draw(std::int64_t step, double seconds) {
    if (!on_ || last_ <= first_ || (drawn_ && seconds - drawn_at_ < 0.1 && step < last_))
      return;  // 10 redraws/s at most
    drawn_at_ = seconds;
    const double done = double(step - first_) / double(last_ - first_);
    const int width = 30, filled = static_cast<int>(done * width);
    const double eta = done > 0 ? seconds * (1 - done) / done : 0;
    std::printf("\r[%s%s] %3.0f%% step %lld/%lld, ETA %s\033[K", std::string(std::size_t(filled), '=').c_str(),
                std::string(std::size_t(width - filled), ' ').c_str(), 100 * done, static_cast<long long>(step),
                static_cast<long long>(last_), duration(eta).c_str());
    std::fflush(stdout);
    drawn_ = true;
  }

 private:
  static bool wanted() {
    if (const char* force = std::getenv("MOE_PROGRESS")) return std::string(force) == "1";
    for (const char* launcher : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "SLURM_PROCID"})
      if (std::getenv(launcher)) return false;
    return isatty(STDOUT_FILENO);
  }
  static std::string duration(double s) {
    char b[32];
    if (s < 60) std::snprintf(b, sizeof(b), "%.0f s", s);
    else if (s < 3600)
      std::snprintf(b, sizeof(b), "%.0f min %02.0f s", s / 60 - 0.5, s - 60 * static_cast<int>(s / 60));
    else std::snprintf(b, sizeof(b), "%.1f h", s / 3600);
    return b;
  }
  bool on_, drawn_ = false;
  double drawn_at_ = 0;
  std::int64_t first_, last_;
};

}  // namespace moe
