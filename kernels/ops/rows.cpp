// Row movement entry points (kernels/ops.h): gather, fixed-width weighted row sums and row-pair
// dot products over index tensors on the data's device; kernels in cpu/rows.cpp and cuda/rows.cu.
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {
void expect_matrix(const char* op, const char* name, const Tensor& t) {
  MOE_CHECK(t.defined() && t.ndim() == 2, ShapeError, "{}: {} {} must be 2-D", op, name, t.describe());
}
}  // namespace

void gather_rows(Tensor& out, const Tensor& in, const Tensor& src) {
  const char* op = "gather_rows";
  expect_matrix(op, "in", in);
  expect_tensor(op, "src", src, DType::i32, {src.numel()});
  const std::int64_t R = src.numel();
  expect_tensor(op, "out", out, in.dtype(), {R, in.size(1)});
  const auto gpu = detail::on_gpu(op, {&out, &in, &src});
  const std::size_t bytes = dtype_size(in.dtype()) * static_cast<std::size_t>(in.size(1));
  if (gpu) {
    if constexpr (detail::kCudaBuilt) return cuda::gather_rows(out.raw(), in.raw(), src.data<std::int32_t>(), R, bytes);
  }
  detail::expect_indices(op, "src", src, in.size(0));
  cpu::gather_rows(out, in, src);
}

void combine_rows(Tensor& out, const Tensor& in, const Tensor& slots, const Tensor& weights, bool accumulate) {
  const char* op = "combine_rows";
  const DType t = detail::real_dtype(op, in);
  expect_matrix(op, "in", in);
  expect_matrix(op, "slots", slots);
  expect_tensor(op, "slots", slots, DType::i32, slots.shape());
  const std::int64_t M = slots.size(0), W = slots.size(1), C = in.size(1);
  expect_tensor(op, "out", out, t, {M, C});
  if (weights.defined()) expect_tensor(op, "weights", weights, t, {M, W});
  const auto gpu = detail::on_gpu(op, {&out, &in, &slots, &weights});
  detail::expect_f32_on_gpu(bool(gpu), op, in);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::combine_rows(out.data<float>(), in.data<float>(), slots.data<std::int32_t>(),
                                weights.defined() ? weights.data<float>() : nullptr, M, W, C, accumulate);
  }
  detail::expect_indices(op, "slots", slots, in.size(0));
  cpu::combine_rows(out, in, slots, weights, accumulate);
}

void row_dot(Tensor& out, const Tensor& a, const Tensor& a_rows, const Tensor& b, const Tensor& b_rows) {
  const char* op = "row_dot";
  const DType t = detail::real_dtype(op, a);
  expect_matrix(op, "a", a);
  expect_matrix(op, "b", b);
  const std::int64_t J = a_rows.numel(), C = a.size(1);
  expect_tensor(op, "a_rows", a_rows, DType::i32, {J});
  if (b_rows.defined()) expect_tensor(op, "b_rows", b_rows, DType::i32, {J});
  else expect_tensor(op, "b", b, t, {J, C});
  expect_tensor(op, "b", b, t, {b.size(0), C});
  expect_tensor(op, "out", out, t, {J});
  const auto gpu = detail::on_gpu(op, {&out, &a, &a_rows, &b, &b_rows});
  detail::expect_f32_on_gpu(bool(gpu), op, a);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::row_dot(out.data<float>(), a.data<float>(), a_rows.data<std::int32_t>(), b.data<float>(),
                           b_rows.defined() ? b_rows.data<std::int32_t>() : nullptr, J, C);
  }
  detail::expect_indices(op, "a_rows", a_rows, a.size(0), /*none_allowed=*/false);
  if (b_rows.defined()) detail::expect_indices(op, "b_rows", b_rows, b.size(0), /*none_allowed=*/false);
  cpu::row_dot(out, a, a_rows, b, b_rows);
}

}  // namespace moe::ops
