// The dispatch plan's ops: capacity, (token, rank) pairs, counting sort, inverse placement,
// routing metadata, and the sequence-wise balance loss (kernels/ops.h). Each is a short
// serial loop in index order: the order the CUDA kernels reproduce (kernels/cuda/routing.cu).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void route_capacity(Tensor& kept, Tensor& counts, const Tensor& index, std::int64_t capacity, std::int64_t n0,
                    std::int64_t n1) {
  const std::int64_t N = index.size(0), K = index.size(1), E = counts.size(1);
  const std::int32_t* idx = index.data<std::int32_t>();
  std::int32_t *out = kept.data<std::int32_t>(), *load = counts.data<std::int32_t>(), *kept_n = load + E;
  std::fill_n(load, 2 * E, 0);
  std::vector<std::int64_t> seen(static_cast<std::size_t>(E), 0);
  for (std::int64_t a = 0; a < N * K; ++a) {
    const std::int32_t e = idx[a];
    const bool mine = a / K >= n0 && a / K < n1, keep = capacity < 0 || seen[std::size_t(e)]++ < capacity;
    out[a] = mine && keep ? e : -1;
    load[e] += mine, kept_n[e] += mine && keep;
  }
}

void route_pairs(Tensor& pairs, Tensor& fan_out, const Tensor& kept, std::int64_t experts_per_rank) {
  const std::int64_t N = kept.size(0), K = kept.size(1), P = pairs.size(1);
  const std::int32_t* kp = kept.data<std::int32_t>();
  std::int32_t *out = pairs.data<std::int32_t>(), most = 1;
  std::fill_n(out, N * P, -1);
  for (std::int64_t n = 0; n < N; ++n) {
    std::int32_t reached = 0;
    for (std::int64_t k = 0; k < K; ++k)
      if (const std::int32_t e = kp[n * K + k]; e >= 0) {
        std::int32_t& p = out[n * P + e / experts_per_rank];
        reached += p < 0;
        p = static_cast<std::int32_t>(e / experts_per_rank);
      }
    most = std::max(most, reached);
  }
  fan_out.data<std::int32_t>()[0] = most;
}

void pick_instances(Tensor& instances, Tensor& counts, const Tensor& kept, const Tensor& table, std::int64_t experts) {
  const std::int64_t N = kept.size(0), K = kept.size(1);
  const std::int32_t *kp = kept.data<std::int32_t>(), *t = table.data<std::int32_t>(), *list = t + experts + 1;
  std::int32_t *out = instances.data<std::int32_t>(), *c = counts.data<std::int32_t>();
  std::fill_n(c, counts.numel(), 0);
  for (std::int64_t a = 0; a < N * K; ++a) {
    const std::int32_t e = kp[a];
    out[a] = e < 0 ? -1 : list[t[e] + (a / K) % (t[e + 1] - t[e])];
    if (e >= 0) ++c[out[a]];
  }
}

void counting_sort(Tensor& dest, Tensor& counts, const Tensor& keys, std::int64_t bins, std::int64_t divisor) {
  const std::int64_t n = keys.numel();
  const std::int32_t* k = keys.data<std::int32_t>();
  std::int32_t* d = dest.data<std::int32_t>();
  std::vector<std::int32_t> next(static_cast<std::size_t>(bins) + 1, 0);
  for (std::int64_t i = 0; i < n; ++i)
    if (k[i] >= 0) ++next[std::size_t(k[i] / divisor) + 1];
  if (counts.defined()) std::copy(next.begin() + 1, next.end(), counts.data<std::int32_t>());
  for (std::size_t b = 1; b < next.size(); ++b) next[b] += next[b - 1];
  for (std::int64_t i = 0; i < n; ++i) d[i] = k[i] < 0 ? -1 : next[std::size_t(k[i] / divisor)]++;
}

void invert_positions(Tensor& src, const Tensor& dest, std::int64_t divisor) {
  const std::int64_t n = dest.numel(), M = src.numel();
  const std::int32_t* d = dest.data<std::int32_t>();
  std::int32_t* s = src.data<std::int32_t>();
  std::fill_n(s, M, -1);
  for (std::int64_t i = 0; i < n; ++i)
    if (d[i] >= 0) s[d[i]] = static_cast<std::int32_t>(i / divisor);
}

void dispatch_slots(Tensor& expert, Tensor& assignment, const Tensor& kept, const Tensor& rows,
                    std::int64_t experts_per_rank) {
  const std::int64_t N = kept.size(0), K = kept.size(1), P = rows.size(1), S = expert.size(0);
  const std::int32_t *kp = kept.data<std::int32_t>(), *row = rows.data<std::int32_t>();
  std::int32_t *ex = expert.data<std::int32_t>(), *as = assignment.data<std::int32_t>();
  std::fill_n(ex, S * K, -1);
  std::fill_n(as, S * K, -1);
  for (std::int64_t a = 0; a < N * K; ++a) {
    const std::int32_t e = kp[a];
    if (e < 0) continue;
    const std::int64_t j = e / experts_per_rank, r = row[(a / K) * P + j], slot = r * K + a % K;
    // The one check only the loop can make: rows and kept must come from one plan.
    MOE_CHECK(r >= 0, ShapeError,
              "dispatch_slots: assignment {} keeps expert {} on rank {}, but rows has no row for it", a, e, j);
    ex[slot] = static_cast<std::int32_t>(e - j * experts_per_rank);
    as[slot] = static_cast<std::int32_t>(a);
  }
}

void balance_loss_forward(Tensor& total, Tensor& f, const Tensor& scores, const Tensor& index, std::int64_t T,
                          double coef) {
  const std::int64_t N = scores.size(0), E = scores.size(1), K = index.size(1), B = N / T;
  const std::int32_t* idx = index.data<std::int32_t>();
  const float* sc = scores.data<float>();
  double* fb = f.data<double>();
  std::fill_n(fb, B * E, 0.0);
  std::vector<double> P(static_cast<std::size_t>(E));
  double loss = 0;
  for (std::int64_t b = 0; b < B; ++b, fb += E) {
    std::fill(P.begin(), P.end(), 0.0);
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t n = b * T + t;
      for (std::int64_t i = 0; i < K; ++i) fb[idx[n * K + i]] += double(E) / double(K * T);
      const float* s = sc + n * E;
      double S = 0;
      for (std::int64_t e = 0; e < E; ++e) S += s[e];
      for (std::int64_t e = 0; e < E; ++e) P[std::size_t(e)] += s[e] / S / double(T);
    }
    for (std::int64_t e = 0; e < E; ++e) loss += coef * fb[e] * P[std::size_t(e)];
  }
  total.data<double>()[0] += loss;
}

void balance_loss_backward(Tensor& dscores, const Tensor& f, const Tensor& scores, std::int64_t T, double coef,
                           double scale) {
  const std::int64_t N = scores.size(0), E = scores.size(1);
  const float* sc = scores.data<float>();
  float* ds = dscores.data<float>();
#pragma omp parallel for
  for (std::int64_t n = 0; n < N; ++n) {
    const double* fb = f.data<double>() + (n / T) * E;
    const float* s = sc + n * E;
    double S = 0, dot = 0;
    for (std::int64_t e = 0; e < E; ++e) S += s[e];
    for (std::int64_t e = 0; e < E; ++e) dot += coef * fb[e] / double(T) * s[e] / S;
    for (std::int64_t e = 0; e < E; ++e)
      ds[n * E + e] = static_cast<float>(scale * (coef * fb[e] / double(T) - dot) / S);
  }
}

void router_z_loss_forward(Tensor& total, Tensor& lse, const Tensor& logits, std::int64_t T, double coef) {
  const std::int64_t N = logits.size(0), E = logits.size(1);
  const float* x = logits.data<float>();
  float* out = lse.data<float>();
#pragma omp parallel for
  for (std::int64_t n = 0; n < N; ++n) {
    const float* row = x + n * E;
    double mx = row[0], s = 0;
    for (std::int64_t e = 1; e < E; ++e) mx = std::max(mx, double(row[e]));
    for (std::int64_t e = 0; e < E; ++e) s += std::exp(double(row[e]) - mx);
    out[n] = static_cast<float>(mx + std::log(s));
  }
  double z = 0;
  for (std::int64_t n = 0; n < N; ++n) z += coef / double(T) * double(out[n]) * double(out[n]);
  total.data<double>()[0] += z;
}

void router_z_loss_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, std::int64_t T, double coef,
                            double scale) {
  const std::int64_t N = logits.size(0), E = logits.size(1);
  const float* x = logits.data<float>();
  const float* l = lse.data<float>();
  float* d = dlogits.data<float>();
#pragma omp parallel for
  for (std::int64_t n = 0; n < N; ++n) {
    const double g = scale * 2 * coef / double(T) * double(l[n]);
    for (std::int64_t e = 0; e < E; ++e)
      d[n * E + e] += static_cast<float>(g * std::exp(double(x[n * E + e]) - double(l[n])));
  }
}

}  // namespace moe::cpu
