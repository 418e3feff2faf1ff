// MoE router entry points (kernels/ops.h); the kernels are cpu/router.cpp and cuda/router.cu.
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {

void check_spec(const char* op, const RouterSpec& s, std::int64_t E) {
  MOE_CHECK(s.n_groups >= 1 && E % s.n_groups == 0, ShapeError, "{}: {} experts not divisible into {} groups", op, E,
            s.n_groups);
  MOE_CHECK(s.topk_groups >= 1 && s.topk_groups <= s.n_groups, ShapeError,
            "{}: topk_groups {} must be in [1, n_groups={}]", op, s.topk_groups, s.n_groups);
  MOE_CHECK(s.top_k >= 1 && s.top_k <= s.topk_groups * (E / s.n_groups), ShapeError,
            "{}: top_k {} exceeds the {} experts reachable in {} of {} groups", op, s.top_k,
            s.topk_groups * (E / s.n_groups), s.topk_groups, s.n_groups);
}

// On the GPU: f32, and at most the kernel's group count.
void expect_gpu_router(bool gpu, const char* op, const Tensor& t, const RouterSpec& spec) {
  detail::expect_f32_on_gpu(gpu, op, t);
  MOE_CHECK(!gpu || spec.n_groups <= cuda::kMaxRouterGroups, ShapeError,
            "{}: the CUDA kernel takes at most {} groups, got {}", op, cuda::kMaxRouterGroups, spec.n_groups);
}

}  // namespace

void router_forward(Tensor& scores, Tensor& index, Tensor& gate, const Tensor& logits, const Tensor& bias,
                    const RouterSpec& spec) {
  const char* op = "router_forward";
  DType t = detail::real_dtype(op, logits);
  MOE_CHECK(logits.ndim() == 2, ShapeError, "{}: logits {} must be (N,E)", op, logits.describe());
  const std::int64_t N = logits.size(0), E = logits.size(1), K = spec.top_k;
  check_spec(op, spec, E);
  expect_tensor(op, "bias", bias, t, {E});
  expect_tensor(op, "scores", scores, t, {N, E});
  expect_tensor(op, "index", index, DType::i32, {N, K});
  expect_tensor(op, "gate", gate, t, {N, K});
  const auto gpu = detail::on_gpu(op, {&scores, &index, &gate, &logits, &bias});
  expect_gpu_router(bool(gpu), op, logits, spec);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::router_forward(scores.data<float>(), index.data<std::int32_t>(), gate.data<float>(),
                                  logits.data<float>(), bias.data<float>(), N, static_cast<int>(E), spec.top_k,
                                  spec.n_groups, spec.topk_groups, spec.kind == RouterKind::sigmoid, spec.normalize,
                                  static_cast<float>(spec.scaling));
  }
  cpu::router_forward(scores, index, gate, logits, bias, spec);
}

void router_backward(Tensor& dlogits, const Tensor& dgate, const Tensor& scores, const Tensor& index,
                     const RouterSpec& spec, const Tensor& dscores) {
  const char* op = "router_backward";
  DType t = detail::real_dtype(op, scores);
  MOE_CHECK(scores.ndim() == 2, ShapeError, "{}: scores {} must be (N,E)", op, scores.describe());
  const std::int64_t N = scores.size(0), E = scores.size(1), K = spec.top_k;
  check_spec(op, spec, E);
  expect_tensor(op, "dlogits", dlogits, t, {N, E});
  expect_tensor(op, "dgate", dgate, t, {N, K});
  expect_tensor(op, "index", index, DType::i32, {N, K});
  if (dscores.defined()) expect_tensor(op, "dscores", dscores, t, {N, E});
  const auto gpu = detail::on_gpu(op, {&dlogits, &dgate, &scores, &index, &dscores});
  detail::expect_f32_on_gpu(bool(gpu), op, scores);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::router_backward(dlogits.data<float>(), dgate.data<float>(), scores.data<float>(),
                                   index.data<std::int32_t>(), dscores.defined() ? dscores.data<float>() : nullptr, N,
                                   static_cast<int>(E), spec.top_k, spec.kind == RouterKind::sigmoid, spec.normalize,
                                   static_cast<float>(spec.scaling));
  }
  cpu::router_backward(dlogits, dgate, scores, index, spec, dscores);
}

}  // namespace moe::ops
