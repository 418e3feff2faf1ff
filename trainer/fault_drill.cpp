#include "trainer/fault_drill.h"

#include <chrono>
#include <limits>
#include <thread>

namespace moe {

namespace {
void set_first(Tensor& t, float value) {  // element 0, on whichever device t lives
  Tensor v = Tensor::empty({1}, DType::f32);
  v.data<float>()[0] = value;
  t.view({t.numel()}).rows(0, 1).copy_from(v);
}
}  // namespace

void FaultDrills::strike(Point point, std::int64_t step, Tensor* target) const {
  const std::int64_t n = step + 1;  // the drills' steps count from 1
  switch (point) {
    case Point::step_start:
      if (d_.hang_at_step == n && d_.hang_rank == rank_) std::this_thread::sleep_for(std::chrono::hours(1));
      return;
    case Point::gradients_summed:
      if (d_.nan_at_step > 0 && n >= d_.nan_at_step && n < d_.nan_at_step + d_.nan_steps && rank_ == 0 && target)
        set_first(*target, std::numeric_limits<float>::quiet_NaN());
      return;
    case Point::router_bias:
      if (d_.collapse_routing && target) set_first(*target, 1e4f);  // sigmoid scores are below 1
      return;
  }
}

}  // namespace moe
