#include "trainer/fault_drill.h"

#include <chrono>
#include <limits>
#include <thread>

namespace moe {

namespace {
void poison(Tensor& g) {  // element 0 := NaN, on whichever device g lives
  Tensor nan = Tensor::empty({1}, DType::f32);
  nan.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  g.view({g.numel()}).rows(0, 1).copy_from(nan);
}
}  // namespace

void FaultDrills::strike(Point point, std::int64_t step, Tensor* gradient) const {
  const std::int64_t n = step + 1;  // the drills' steps count from 1
  switch (point) {
    case Point::step_start:
      if (d_.hang_at_step == n && d_.hang_rank == rank_) std::this_thread::sleep_for(std::chrono::hours(1));
      return;
    case Point::gradients_summed:
      if (d_.nan_at_step > 0 && n >= d_.nan_at_step && n < d_.nan_at_step + d_.nan_steps && rank_ == 0 && gradient)
        poison(*gradient);
      return;
  }
}

}  // namespace moe
