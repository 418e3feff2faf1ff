#include "model/router.h"

#include <cmath>

namespace moe::routing {

Kept apply_capacity(const std::int32_t* index, std::int64_t N, std::int64_t K, std::int64_t E, double factor,
                    std::int64_t n0, std::int64_t n1) {
  Kept k{std::vector<std::int64_t>(std::size_t(N * K), -1), std::vector<std::int64_t>(std::size_t(E), 0), 0};
  for (std::int64_t a = n0 * K; a < n1 * K; ++a) ++k.load[std::size_t(index[a])];
  const std::int64_t cap = factor > 0 ? static_cast<std::int64_t>(std::ceil(factor * double(N * K) / double(E))) : N * K;
  std::vector<std::int64_t> kept(std::size_t(E), 0);
  for (std::int64_t a = 0; a < N * K; ++a) {
    auto& c = kept[std::size_t(index[a])];
    if (c < cap) k.pos[std::size_t(a)] = c++;
    else k.dropped += a / K >= n0 && a / K < n1;
  }
  return k;
}

double balance_loss(std::vector<double>& f_all, const Tensor& scores, const std::int32_t* index, std::int64_t B,
                    std::int64_t T, std::int64_t K, double coef) {
  const std::int64_t E = scores.size(1);
  f_all.assign(std::size_t(B * E), 0.0);
  double aux = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    double* f = f_all.data() + b * E;
    std::vector<double> P(std::size_t(E), 0.0);
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t n = b * T + t;
      for (std::int64_t i = 0; i < K; ++i) f[index[n * K + i]] += double(E) / double(K * T);
      const float* s = scores.data<float>() + n * E;
      double S = 0;
      for (std::int64_t e = 0; e < E; ++e) S += s[e];
      for (std::int64_t e = 0; e < E; ++e) P[std::size_t(e)] += s[e] / S / double(T);
    }
    for (std::int64_t e = 0; e < E; ++e) aux += coef * f[e] * P[std::size_t(e)];
  }
  return aux;
}

Tensor balance_loss_grad(const std::vector<double>& f_all, const Tensor& scores, std::int64_t T, double coef,
                         double scale) {
  const std::int64_t N = scores.size(0), E = scores.size(1);
  Tensor grad = Tensor::empty({N, E}, DType::f32);
  float* ds = grad.data<float>();
  for (std::int64_t n = 0; n < N; ++n) {
    const double* f = f_all.data() + (n / T) * E;
    const float* s = scores.data<float>() + n * E;
    double S = 0, dot = 0;
    for (std::int64_t e = 0; e < E; ++e) S += s[e];
    for (std::int64_t e = 0; e < E; ++e) dot += coef * f[e] / double(T) * s[e] / S;
    for (std::int64_t e = 0; e < E; ++e) ds[n * E + e] = static_cast<float>(scale * (coef * f[e] / double(T) - dot) / S);
  }
  return grad;
}

}  // namespace moe::routing
