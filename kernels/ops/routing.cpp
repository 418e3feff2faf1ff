// The dispatch plan's entry points (kernels/ops.h): capacity, (token, rank) pairs, counting
// sort, inverse placement, routing metadata, and the sequence-wise balance loss; kernels in
// cpu/routing.cpp and cuda/routing.cu.
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {
void expect_i32(const char* op, const char* name, const Tensor& t, const Shape& shape) {
  expect_tensor(op, name, t, DType::i32, shape);
}
// The table pick_instances reads: offsets that rise from 0 by at least 1 per expert to the
// list's end, and instance ids below I.
void expect_instance_table(const char* op, const Tensor& table, std::int64_t experts, std::int64_t I) {
  const std::int32_t* t = table.data<std::int32_t>();
  for (std::int64_t e = 0; e < experts; ++e)
    MOE_CHECK(t[0] == 0 && t[e + 1] > t[e], ShapeError, "{}: expert {} has no instance in the table", op, e);
  MOE_CHECK(t[experts] == table.numel() - experts - 1, ShapeError, "{}: table {} ends at offset {}", op,
            table.describe(), t[experts]);
  for (std::int64_t i = experts + 1; i < table.numel(); ++i)
    MOE_CHECK(t[i] >= 0 && t[i] < I, ShapeError, "{}: instance {} outside [0, {})", op, t[i], I);
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
    if constexpr (detail::kCudaBuilt)
      return cuda::route_capacity(kept.data<std::int32_t>(), counts.data<std::int32_t>(), index.data<std::int32_t>(), N,
                                  K, E, capacity, n0, n1);
  }
  detail::expect_indices(op, "index", index, E, /*none_allowed=*/false);
  cpu::route_capacity(kept, counts, index, capacity, n0, n1);
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
    if constexpr (detail::kCudaBuilt)
      return cuda::route_pairs(pairs.data<std::int32_t>(), fan_out.data<std::int32_t>(), kept.data<std::int32_t>(), N,
                               K, P, experts_per_rank);
  }
  detail::expect_indices(op, "kept", kept, P * experts_per_rank);
  cpu::route_pairs(pairs, fan_out, kept, experts_per_rank);
}

void pick_instances(Tensor& instances, Tensor& counts, const Tensor& kept, const Tensor& table, std::int64_t experts) {
  const char* op = "pick_instances";
  MOE_CHECK(kept.defined() && kept.ndim() == 2, ShapeError, "{}: kept {} must be (N,K)", op, kept.describe());
  const std::int64_t N = kept.size(0), K = kept.size(1), I = counts.numel();
  expect_i32(op, "kept", kept, {N, K});
  expect_i32(op, "instances", instances, {N, K});
  expect_i32(op, "counts", counts, {I});
  MOE_CHECK(experts > 0 && table.defined() && table.numel() > experts, ShapeError,
            "{}: table {} must hold {} + 1 offsets and the instances", op, table.describe(), experts);
  expect_i32(op, "table", table, {table.numel()});
  const auto gpu = detail::on_gpu(op, {&instances, &counts, &kept, &table});
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::pick_instances(instances.data<std::int32_t>(), counts.data<std::int32_t>(),
                                  kept.data<std::int32_t>(), table.data<std::int32_t>(), N, K, experts, I);
  }
  detail::expect_indices(op, "kept", kept, experts);
  expect_instance_table(op, table, experts, I);
  cpu::pick_instances(instances, counts, kept, table, experts);
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
    if constexpr (detail::kCudaBuilt)
      return cuda::counting_sort(dest.data<std::int32_t>(), counts.defined() ? counts.data<std::int32_t>() : nullptr,
                                 keys.data<std::int32_t>(), n, bins, divisor);
  }
  detail::expect_indices(op, "keys", keys, bins * divisor);
  cpu::counting_sort(dest, counts, keys, bins, divisor);
}

void invert_positions(Tensor& src, const Tensor& dest, std::int64_t divisor) {
  const char* op = "invert_positions";
  const std::int64_t n = dest.numel(), M = src.numel();
  expect_i32(op, "dest", dest, {n});
  expect_i32(op, "src", src, {M});
  MOE_CHECK(divisor > 0, ShapeError, "{}: divisor {} must be positive", op, divisor);
  const auto gpu = detail::on_gpu(op, {&src, &dest});
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::invert_positions(src.data<std::int32_t>(), dest.data<std::int32_t>(), n, M, divisor);
  }
  detail::expect_indices(op, "dest", dest, M);
  cpu::invert_positions(src, dest, divisor);
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
    if constexpr (detail::kCudaBuilt)
      return cuda::dispatch_slots(expert.data<std::int32_t>(), assignment.data<std::int32_t>(),
                                  kept.data<std::int32_t>(), rows.data<std::int32_t>(), N, K, P, S, experts_per_rank);
  }
  detail::expect_indices(op, "kept", kept, P * experts_per_rank);
  detail::expect_indices(op, "rows", rows, S);
  cpu::dispatch_slots(expert, assignment, kept, rows, experts_per_rank);
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
    if constexpr (detail::kCudaBuilt)
      return cuda::balance_loss_forward(total.data<double>(), f.data<double>(), scores.data<float>(),
                                        index.data<std::int32_t>(), B, T, E, K, coef);
  }
  detail::expect_indices(op, "index", index, E, /*none_allowed=*/false);
  cpu::balance_loss_forward(total, f, scores, index, T, coef);
}

namespace {
// (N,E) rows of whole sequences of T: the loss ops' shape rule. Returns {N, E}.
std::pair<std::int64_t, std::int64_t> sequence_rows(const char* op, const char* name, const Tensor& t, std::int64_t T) {
  MOE_CHECK(t.defined() && t.ndim() == 2, ShapeError, "{}: {} {} must be (N,E)", op, name, t.describe());
  MOE_CHECK(T > 0 && t.size(0) % T == 0, ShapeError, "{}: {} tokens are not whole sequences of {}", op, t.size(0), T);
  return {t.size(0), t.size(1)};
}
}  // namespace

void balance_loss_backward(Tensor& dscores, const Tensor& f, const Tensor& scores, std::int64_t T, double coef,
                           double scale) {
  const char* op = "balance_loss_backward";
  const auto [N, E] = sequence_rows(op, "scores", scores, T);
  expect_tensor(op, "scores", scores, DType::f32, {N, E});
  expect_tensor(op, "f", f, DType::f64, {N / T, E});
  expect_tensor(op, "dscores", dscores, DType::f32, {N, E});
  const auto gpu = detail::on_gpu(op, {&dscores, &f, &scores});
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::balance_loss_backward(dscores.data<float>(), f.data<double>(), scores.data<float>(), N, T, E, coef,
                                         scale);
  }
  cpu::balance_loss_backward(dscores, f, scores, T, coef, scale);
}

void router_z_loss_forward(Tensor& total, Tensor& lse, const Tensor& logits, std::int64_t T, double coef) {
  const char* op = "router_z_loss_forward";
  const auto [N, E] = sequence_rows(op, "logits", logits, T);
  MOE_CHECK(E > 0, ShapeError, "{}: logits {} have no experts", op, logits.describe());
  expect_tensor(op, "logits", logits, DType::f32, {N, E});
  expect_tensor(op, "lse", lse, DType::f32, {N});
  expect_tensor(op, "total", total, DType::f64, {1});
  const auto gpu = detail::on_gpu(op, {&total, &lse, &logits});
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::router_z_loss_forward(total.data<double>(), lse.data<float>(), logits.data<float>(), N, T, E, coef);
  }
  cpu::router_z_loss_forward(total, lse, logits, T, coef);
}

void router_z_loss_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, std::int64_t T, double coef,
                            double scale) {
  const char* op = "router_z_loss_backward";
  const auto [N, E] = sequence_rows(op, "logits", logits, T);
  expect_tensor(op, "logits", logits, DType::f32, {N, E});
  expect_tensor(op, "lse", lse, DType::f32, {N});
  expect_tensor(op, "dlogits", dlogits, DType::f32, {N, E});
  const auto gpu = detail::on_gpu(op, {&dlogits, &logits, &lse});
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::router_z_loss_backward(dlogits.data<float>(), logits.data<float>(), lse.data<float>(), N, T, E, coef,
                                          scale);
  }
  cpu::router_z_loss_backward(dlogits, logits, lse, T, coef, scale);
}

}  // namespace moe::ops
