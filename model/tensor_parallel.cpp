#include "model/tensor_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace moe {
namespace {
// Element copies between a (outer, full, inner) view and a (outer, count, inner) view.
template <class F>
void for_each_run(const Shape& full, int dim, std::int64_t count, F&& f) {
  std::int64_t outer = 1, inner = 1;
  for (int d = 0; d < dim; ++d) outer *= full[static_cast<std::size_t>(d)];
  for (std::size_t d = static_cast<std::size_t>(dim) + 1; d < full.size(); ++d) inner *= full[d];
  const std::int64_t n = full[static_cast<std::size_t>(dim)];
  for (std::int64_t o = 0; o < outer; ++o) f(o * n * inner, o * count * inner, count * inner, inner);
}
}  // namespace

void TensorParallel::split(Param& p, int dim, std::int64_t full) const {
  MOE_CHECK(full % size == 0 && p.shape()[static_cast<std::size_t>(dim)] == full / size, ShapeError,
            "{}: {} cannot be split over {} tensor-parallel ranks along dim {}", p.name, full, size, dim);
  if (!on()) return;
  p.split_dim = dim, p.split_begin = begin(full), p.split_full = full;
}

Tensor take_shard(const Tensor& full, int dim, std::int64_t begin, std::int64_t count) {
  Shape s = full.shape();
  s[static_cast<std::size_t>(dim)] = count;
  Tensor out = Tensor::empty(s, DType::f32);
  const float* src = full.data<float>();
  float* dst = out.data<float>();
  for_each_run(full.shape(), dim, count, [&](std::int64_t f, std::int64_t sh, std::int64_t n, std::int64_t inner) {
    std::memcpy(dst + sh, src + f + begin * inner, static_cast<std::size_t>(n) * sizeof(float));
  });
  return out;
}

void put_shard(Tensor& full, const Tensor& shard, int dim, std::int64_t begin) {
  const float* src = shard.data<float>();
  float* dst = full.data<float>();
  for_each_run(full.shape(), dim, shard.size(dim),
               [&](std::int64_t f, std::int64_t sh, std::int64_t n, std::int64_t inner) {
                 std::memcpy(dst + f + begin * inner, src + sh, static_cast<std::size_t>(n) * sizeof(float));
               });
}

void vocab_parallel_ce_forward(Tensor& losses, Tensor& lse, const Tensor& logits, const Tensor& targets,
                               std::int64_t v0, const TensorParallel& tp) {
  const std::int64_t N = logits.size(0), V = logits.size(1);
  const float* l = logits.data<float>();
  const std::int32_t* tg = targets.data<std::int32_t>();
  // Row maxima of every rank, then the global maximum.
  Tensor mine = Tensor::empty({N}, DType::f32), all = Tensor::empty({tp.size * N}, DType::f32);
  float* mx = mine.data<float>();
  for (std::int64_t n = 0; n < N; ++n) mx[n] = *std::max_element(l + n * V, l + (n + 1) * V);
  if (tp.comm) tp.comm->all_gather(all, mine);
  else all.copy_from(mine);
  for (int r = 0; r < tp.size; ++r)  // (this rank's own maxima are among them)
    for (std::int64_t n = 0; n < N; ++n) mx[n] = std::max(mx[n], all.data<float>()[r * N + n]);
  // [sum of exp(l - max) | the target's logit where this rank holds it], summed over ranks.
  Tensor sums = Tensor::zeros({2 * N}, DType::f64);
  double* s = sums.data<double>();
  for (std::int64_t n = 0; n < N; ++n) {
    for (std::int64_t v = 0; v < V; ++v) s[n] += std::exp(double(l[n * V + v]) - mx[n]);
    if (tg[n] >= v0 && tg[n] < v0 + V) s[N + n] = l[n * V + (tg[n] - v0)];
  }
  tp.all_reduce(sums);
  float *out = losses.data<float>(), *ls = lse.data<float>();
  for (std::int64_t n = 0; n < N; ++n) {
    ls[n] = static_cast<float>(mx[n] + std::log(s[n]));
    out[n] = tg[n] < 0 ? 0.f : static_cast<float>(double(ls[n]) - s[N + n]);
  }
}

void vocab_parallel_ce_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& lse,
                                const Tensor& targets, std::int64_t v0) {
  const std::int64_t N = logits.size(0), V = logits.size(1);
  const float *l = logits.data<float>(), *dl = dlosses.data<float>(), *ls = lse.data<float>();
  const std::int32_t* tg = targets.data<std::int32_t>();
  float* d = dlogits.data<float>();
  for (std::int64_t n = 0; n < N; ++n) {
    float* dr = d + n * V;
    if (tg[n] < 0) {
      std::fill(dr, dr + V, 0.f);
      continue;
    }
    for (std::int64_t v = 0; v < V; ++v) dr[v] = std::exp(l[n * V + v] - ls[n]) * dl[n];
    if (tg[n] >= v0 && tg[n] < v0 + V) dr[tg[n] - v0] -= dl[n];
  }
}

}  // namespace moe
