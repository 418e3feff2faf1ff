// Whether a step's update is applied (issue 11's fault handling): a non-finite loss or
// gradient norm, or a loss spiking more than `spike_zscore` standard deviations above the
// mean of the last `window` applied steps, skips the update. Its inputs are all-reduced, so
// every rank reaches the same verdict without talking.
#pragma once
#include <cstdint>
#include <deque>

namespace moe {

class StepGuard {
 public:
  enum class Verdict { apply, nonfinite, spike };
  // spike_zscore 0: no spike check. The spike check waits for `window` applied steps.
  StepGuard(double spike_zscore, std::int64_t window) : z_(spike_zscore), window_(window) {}
  Verdict check(double loss, double grad_norm);
  std::int64_t skipped() const { return skipped_; }          // in all
  std::int64_t consecutive() const { return consecutive_; }  // skipped in a row, up to the last check
  double threshold() const;                                  // the loss above which a step is a spike (inf: none yet)

 private:
  double z_;
  std::int64_t window_;
  std::deque<double> recent_;  // losses of the last applied steps
  std::int64_t skipped_ = 0, consecutive_ = 0;
};

}  // namespace moe
