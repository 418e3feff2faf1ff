#include <cmath>

#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {

void adamw_step(Tensor& param, Tensor& m, Tensor& v, const Tensor& grad, const AdamWSpec& s) {
  const char* op = "adamw_step";
  expect_tensor(op, "param", param, DType::f32, param.shape());
  expect_tensor(op, "m", m, DType::f32, param.shape());
  expect_tensor(op, "v", v, DType::f32, param.shape());
  expect_tensor(op, "grad", grad, DType::f32, param.shape());
  const auto gpu = detail::on_gpu(op, {&param, &m, &v, &grad});
  MOE_CHECK(s.step >= 1, ShapeError, "{}: step must be >= 1 (1-based), got {}", op, s.step);
  float *p = param.data<float>(), *mp = m.data<float>(), *vp = v.data<float>();
  const float* g = grad.data<float>();
  // Bias corrections in double: b^t for large t loses digits in float.
  const float bc1 = static_cast<float>(1.0 - std::pow(s.beta1, static_cast<double>(s.step)));
  const float bc2 = static_cast<float>(1.0 - std::pow(s.beta2, static_cast<double>(s.step)));
  const float lr = static_cast<float>(s.lr), b1 = static_cast<float>(s.beta1), b2 = static_cast<float>(s.beta2);
  const float eps = static_cast<float>(s.eps), decay = 1.0f - lr * static_cast<float>(s.weight_decay);
  const std::int64_t n = param.numel();
  if (gpu) {
    if constexpr (detail::kCudaBuilt) return cuda::adamw_step(p, mp, vp, g, n, lr, b1, b2, eps, decay, bc1, bc2);
  }
  cpu::adamw_step(p, mp, vp, g, n, lr, b1, b2, eps, decay, bc1, bc2);
}

}  // namespace moe::ops
