// The dispatch plan's ops: capacity, (token, rank) pairs, counting sort, inverse placement,
// routing metadata, and the sequence-wise balance loss (kernels/ops.h). Each is a short
// serial loop in index order: the order the CUDA kernels reproduce (kernels/cuda/routing.cu).
#include <algorithm>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
namespace {
void expect_i32(const char* op, const char* name, const Tensor& t, const Shape& shape) {
  expect_tensor(op, name, t, DType::i32, shape);
}
}  // namespace

void route_capacity(Tensor& kept, Tensor& counts, const Tensor& index, std::int64_t capacity, std::int64_t n0,
                    std::int64_t n1) {
  const char* op = "route_capacity";
  MOE_CHECK(index.defined() && index.ndim() == 2, ShapeError, "{}: index {} must be (N,K)", op, index.describe());
  const std::int64_t N = index.size(0), K = index.size(1);
  MOE_CHECK(counts.defined() && counts.ndim() == 2 && counts.size(0) == 2, ShapeError, "{}: counts {} must be (2,E)",
            op, counts.describe());
  const std::int64_t E = counts.size(1);
  expect_i32(op, "kept", kept, {N, K});
  expect_i32(op, "counts", counts, {2, E});
  MOE_CHECK(0 <= n0 && n0 <= n1 && n1 <= N, ShapeError, "{}: tokens [{}, {}) outside [0, {})", op, n0, n1, N);
  const auto gpu = detail::on_gpu(op, {&kept, &counts, &index});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::route_capacity(kept.data<std::int32_t>(), counts.data<std::int32_t>(), index.data<std::int32_t>(), N,
                                K, E, capacity, n0, n1);
#endif
  }
  detail::expect_indices(op, "index", index, E, /*none_allowed=*/false);
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
  const char* op = "route_pairs";
  MOE_CHECK(kept.defined() && kept.ndim() == 2 && pairs.defined() && pairs.ndim() == 2, ShapeError,
            "{}: kept {} and pairs {} must be 2-D", op, kept.describe(), pairs.describe());
  const std::int64_t N = kept.size(0), K = kept.size(1), P = pairs.size(1);
  expect_i32(op, "kept", kept, {N, K});
  expect_i32(op, "pairs", pairs, {N, P});
  expect_i32(op, "fan_out", fan_out, {1});
  MOE_CHECK(experts_per_rank > 0, ShapeError, "{}: experts_per_rank {} must be positive", op, experts_per_rank);
  const auto gpu = detail::on_gpu(op, {&pairs, &fan_out, &kept});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::route_pairs(pairs.data<std::int32_t>(), fan_out.data<std::int32_t>(), kept.data<std::int32_t>(), N, K,
                             P, experts_per_rank);
#endif
  }
  detail::expect_indices(op, "kept", kept, P * experts_per_rank);
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

void counting_sort(Tensor& dest, Tensor& counts, const Tensor& keys, std::int64_t bins, std::int64_t divisor) {
  const char* op = "counting_sort";
  const std::int64_t n = keys.numel();
  expect_i32(op, "keys", keys, {n});
  expect_i32(op, "dest", dest, {n});
  if (counts.defined()) expect_i32(op, "counts", counts, {bins});
  MOE_CHECK(bins > 0 && divisor > 0, ShapeError, "{}: bins {} and divisor {} must be positive", op, bins, divisor);
  MOE_CHECK(n == 0 || !dest.same_start(keys), ShapeError, "{}: dest must not be keys (the GPU ranks in place)", op);
  const auto gpu = detail::on_gpu(op, {&dest, &counts, &keys});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::counting_sort(dest.data<std::int32_t>(), counts.defined() ? counts.data<std::int32_t>() : nullptr,
                               keys.data<std::int32_t>(), n, bins, divisor);
#endif
  }
  detail::expect_indices(op, "keys", keys, bins * divisor);
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
  const char* op = "invert_positions";
  const std::int64_t n = dest.numel(), M = src.numel();
  expect_i32(op, "dest", dest, {n});
  expect_i32(op, "src", src, {M});
  MOE_CHECK(divisor > 0, ShapeError, "{}: divisor {} must be positive", op, divisor);
  const auto gpu = detail::on_gpu(op, {&src, &dest});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::invert_positions(src.data<std::int32_t>(), dest.data<std::int32_t>(), n, M, divisor);
#endif
  }
  detail::expect_indices(op, "dest", dest, M);
  const std::int32_t* d = dest.data<std::int32_t>();
  std::int32_t* s = src.data<std::int32_t>();
  std::fill_n(s, M, -1);
  for (std::int64_t i = 0; i < n; ++i)
    if (d[i] >= 0) s[d[i]] = static_cast<std::int32_t>(i / divisor);
}

void dispatch_slots(Tensor& expert, Tensor& assignment, const Tensor& kept, const Tensor& rows,
                    std::int64_t experts_per_rank) {
  const char* op = "dispatch_slots";
  MOE_CHECK(kept.defined() && kept.ndim() == 2 && rows.defined() && rows.ndim() == 2 && expert.defined() &&
                expert.ndim() == 2,
            ShapeError, "{}: kept {}, rows {} and expert {} must be 2-D", op, kept.describe(), rows.describe(),
            expert.describe());
  const std::int64_t N = kept.size(0), K = kept.size(1), P = rows.size(1), S = expert.size(0);
  expect_i32(op, "kept", kept, {N, K});
  expect_i32(op, "rows", rows, {N, P});
  expect_i32(op, "expert", expert, {S, K});
  expect_i32(op, "assignment", assignment, {S * K});
  MOE_CHECK(experts_per_rank > 0, ShapeError, "{}: experts_per_rank {} must be positive", op, experts_per_rank);
  const auto gpu = detail::on_gpu(op, {&expert, &assignment, &kept, &rows});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::dispatch_slots(expert.data<std::int32_t>(), assignment.data<std::int32_t>(), kept.data<std::int32_t>(),
                                rows.data<std::int32_t>(), N, K, P, S, experts_per_rank);
#endif
  }
  detail::expect_indices(op, "kept", kept, P * experts_per_rank);
  detail::expect_indices(op, "rows", rows, S);
  const std::int32_t *kp = kept.data<std::int32_t>(), *row = rows.data<std::int32_t>();
  std::int32_t *ex = expert.data<std::int32_t>(), *as = assignment.data<std::int32_t>();
  std::fill_n(ex, S * K, -1);
  std::fill_n(as, S * K, -1);
  for (std::int64_t a = 0; a < N * K; ++a) {
    const std::int32_t e = kp[a];
    if (e < 0) continue;
    const std::int64_t j = e / experts_per_rank, r = row[(a / K) * P + j], slot = r * K + a % K;
    MOE_CHECK(r >= 0, ShapeError, "{}: assignment {} keeps expert {} on rank {}, but rows has no row for it", op, a, e,
              j);
    ex[slot] = static_cast<std::int32_t>(e - j * experts_per_rank);
    as[slot] = static_cast<std::int32_t>(a);
  }
}

void balance_loss_forward(Tensor& total, Tensor& f, const Tensor& scores, const Tensor& index, std::int64_t T,
                          double coef) {
  const char* op = "balance_loss_forward";
  MOE_CHECK(scores.defined() && scores.ndim() == 2 && index.defined() && index.ndim() == 2, ShapeError,
            "{}: scores {} and index {} must be 2-D", op, scores.describe(), index.describe());
  const std::int64_t N = scores.size(0), E = scores.size(1), K = index.size(1);
  MOE_CHECK(T > 0 && N % T == 0, ShapeError, "{}: {} tokens are not whole sequences of {}", op, N, T);
  const std::int64_t B = N / T;
  expect_tensor(op, "scores", scores, DType::f32, {N, E});
  expect_i32(op, "index", index, {N, K});
  expect_tensor(op, "total", total, DType::f64, {1});
  expect_tensor(op, "f", f, DType::f64, {B, E});
  const auto gpu = detail::on_gpu(op, {&total, &f, &scores, &index});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::balance_loss_forward(total.data<double>(), f.data<double>(), scores.data<float>(),
                                      index.data<std::int32_t>(), B, T, E, K, coef);
#endif
  }
  detail::expect_indices(op, "index", index, E, /*none_allowed=*/false);
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
  const char* op = "balance_loss_backward";
  MOE_CHECK(scores.defined() && scores.ndim() == 2, ShapeError, "{}: scores {} must be (N,E)", op, scores.describe());
  const std::int64_t N = scores.size(0), E = scores.size(1);
  MOE_CHECK(T > 0 && N % T == 0, ShapeError, "{}: {} tokens are not whole sequences of {}", op, N, T);
  expect_tensor(op, "scores", scores, DType::f32, {N, E});
  expect_tensor(op, "f", f, DType::f64, {N / T, E});
  expect_tensor(op, "dscores", dscores, DType::f32, {N, E});
  const auto gpu = detail::on_gpu(op, {&dscores, &f, &scores});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::balance_loss_backward(dscores.data<float>(), f.data<double>(), scores.data<float>(), N, T, E, coef,
                                       scale);
#endif
  }
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

}  // namespace moe::ops
