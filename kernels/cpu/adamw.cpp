#include <cmath>

#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void adamw_step(float* p, float* m, float* v, const float* g, std::int64_t n, float lr, float beta1, float beta2,
                float eps, float decay, float bc1, float bc2) {
#pragma omp parallel for
  for (std::int64_t i = 0; i < n; ++i) {
    m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    p[i] = p[i] * decay - lr * (m[i] / bc1) / (std::sqrt(v[i] / bc2) + eps);
  }
}

}  // namespace moe::cpu
