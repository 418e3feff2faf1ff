#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {
void check(const char* op, const Tensor& logits, const Tensor& targets) {
  MOE_CHECK(logits.ndim() == 2, ShapeError, "{}: logits {} must be (N,V)", op, logits.describe());
  expect_tensor(op, "targets", targets, DType::i32, {logits.size(0)});
  expect_ids(op, "target", targets, -1, logits.size(1));  // device targets: checked on the host by the caller
}
}  // namespace

void cross_entropy_forward(Tensor& losses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_forward";
  DType t = detail::real_dtype(op, logits);
  check(op, logits, targets);
  const std::int64_t N = logits.size(0), V = logits.size(1);
  expect_tensor(op, "losses", losses, t, {N});
  const auto gpu = detail::on_gpu(op, {&losses, &logits, &targets});
  detail::expect_f32_on_gpu(bool(gpu), op, logits);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::cross_entropy(losses.data<float>(), nullptr, nullptr, logits.data<float>(),
                                 targets.data<std::int32_t>(), N, V);
  }
  cpu::cross_entropy_forward(losses, logits, targets);
}

void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& targets) {
  const char* op = "cross_entropy_backward";
  DType t = detail::real_dtype(op, logits);
  check(op, logits, targets);
  const std::int64_t N = logits.size(0), V = logits.size(1);
  expect_tensor(op, "dlosses", dlosses, t, {N});
  expect_tensor(op, "dlogits", dlogits, t, {N, V});
  const auto gpu = detail::on_gpu(op, {&dlogits, &dlosses, &logits, &targets});
  detail::expect_f32_on_gpu(bool(gpu), op, logits);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::cross_entropy(nullptr, dlogits.data<float>(), dlosses.data<float>(), logits.data<float>(),
                                 targets.data<std::int32_t>(), N, V);
  }
  cpu::cross_entropy_backward(dlogits, dlosses, logits, targets);
}

}  // namespace moe::ops
