#include <cmath>
#include <type_traits>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
namespace {

// Rotates each (i, i+D/2) pair of every head by sign * pos * theta^(-2i/D).
void rope_apply(const char* op, Tensor& y, const Tensor& x, double theta, double sign) {
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 4 && x.size(3) % 2 == 0, ShapeError, "{}: x {} must be (B,T,H,D) with D even", op,
            x.describe());
  const std::int64_t B = x.size(0), T_ = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  expect_tensor(op, "y", y, t, x.shape());
  const bool gpu = detail::on_gpu(op, {&y, &x});
  MOE_CHECK(!gpu || t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, x.describe());
  detail::dispatch_real(t, [&]<class T>() {
    // cos/sin of every (position, pair) once, in double whatever T is, so f32 and f64 rotate
    // by the same angle; the same table serves every sequence and head (and the GPU's).
    Tensor cos_t = Tensor::empty({T_, half}, dtype_of<T>::value), sin_t = Tensor::empty({T_, half}, dtype_of<T>::value);
    T *cs = cos_t.data<T>(), *sn = sin_t.data<T>();
    for (std::int64_t p = 0; p < T_; ++p)
      for (std::int64_t i = 0; i < half; ++i) {
        const double ang = sign * static_cast<double>(p) * std::pow(theta, -2.0 * double(i) / static_cast<double>(D));
        cs[p * half + i] = static_cast<T>(std::cos(ang));
        sn[p * half + i] = static_cast<T>(std::sin(ang));
      }
    if (gpu) {
#ifdef MOE_WITH_CUDA
      if constexpr (std::is_same_v<T, float>) {
        const Tensor cd = cos_t.to(Device::cuda), sd = sin_t.to(Device::cuda);
        cuda::rope(y.data<float>(), x.data<float>(), cd.data<float>(), sd.data<float>(), B, T_, H, D);
      }
#endif
      return;
    }
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
#pragma omp parallel for collapse(2)
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t p = 0; p < T_; ++p)
        for (std::int64_t h = 0; h < H; ++h) {
          const std::int64_t base = ((b * T_ + p) * H + h) * D;
          const T *c = cs + p * half, *s = sn + p * half;
          for (std::int64_t i = 0; i < half; ++i) {
            const T x1 = xp[base + i], x2 = xp[base + i + half];  // read both before writing (y may alias x)
            yp[base + i] = x1 * c[i] - x2 * s[i];
            yp[base + i + half] = x2 * c[i] + x1 * s[i];
          }
        }
  });
}

}  // namespace

void rope_forward(Tensor& y, const Tensor& x, double theta) { rope_apply("rope_forward", y, x, theta, +1.0); }
void rope_backward(Tensor& dx, const Tensor& dy, double theta) { rope_apply("rope_backward", dx, dy, theta, -1.0); }

}  // namespace moe::ops
