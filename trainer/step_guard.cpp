#include "trainer/step_guard.h"

#include <cmath>
#include <limits>

namespace moe {

double StepGuard::threshold() const {
  if (z_ <= 0 || static_cast<std::int64_t>(recent_.size()) < window_) return std::numeric_limits<double>::infinity();
  double mean = 0, sq = 0;
  for (double l : recent_) mean += l;
  mean /= double(recent_.size());
  for (double l : recent_) sq += (l - mean) * (l - mean);
  return mean + z_ * std::sqrt(sq / double(recent_.size()));
}

StepGuard::Verdict StepGuard::check(double loss, double grad_norm) {
  Verdict v = Verdict::apply;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) v = Verdict::nonfinite;
  else if (loss > threshold()) v = Verdict::spike;
  if (v != Verdict::apply) {
    ++skipped_, ++consecutive_;
    return v;
  }
  consecutive_ = 0;
  recent_.push_back(loss);
  if (static_cast<std::int64_t>(recent_.size()) > window_) recent_.pop_front();
  return v;
}

}  // namespace moe
