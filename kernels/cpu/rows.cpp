// Row movement: gather, fixed-width weighted row sums and row-pair dot products over device
// index tensors (kernels/ops.h).
#include <cstring>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

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
#ifdef MOE_WITH_CUDA
    return cuda::gather_rows(out.raw(), in.raw(), src.data<std::int32_t>(), R, bytes);
#endif
  }
  detail::expect_indices(op, "src", src, in.size(0));
  const std::int32_t* s = src.data<std::int32_t>();
  const auto* from = static_cast<const char*>(in.raw());
  auto* to = static_cast<char*>(out.raw());
#pragma omp parallel for
  for (std::int64_t r = 0; r < R; ++r) {
    char* d = to + std::size_t(r) * bytes;
    if (s[r] < 0) std::memset(d, 0, bytes);
    else std::memcpy(d, from + std::size_t(s[r]) * bytes, bytes);
  }
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
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, in.describe());
    return cuda::combine_rows(out.data<float>(), in.data<float>(), slots.data<std::int32_t>(),
                              weights.defined() ? weights.data<float>() : nullptr, M, W, C, accumulate);
#endif
  }
  detail::expect_indices(op, "slots", slots, in.size(0));
  detail::dispatch_real(t, [&]<class T>() {
    const T* x = in.data<T>();
    const T* w = weights.defined() ? weights.data<T>() : nullptr;
    const std::int32_t* s = slots.data<std::int32_t>();
    T* y = out.data<T>();
#pragma omp parallel for
    for (std::int64_t m = 0; m < M; ++m) {
      T* ym = y + m * C;
      bool first = !accumulate;
      for (std::int64_t j = m * W; j < (m + 1) * W; ++j) {
        if (s[j] < 0) continue;
        const T* xr = x + s[j] * C;
        for (std::int64_t c = 0; c < C; ++c) {
          const T term = w ? w[j] * xr[c] : xr[c];
          ym[c] = first ? term : ym[c] + term;
        }
        first = false;
      }
      if (first) std::fill_n(ym, C, T(0));
    }
  });
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
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, a.describe());
    return cuda::row_dot(out.data<float>(), a.data<float>(), a_rows.data<std::int32_t>(), b.data<float>(),
                         b_rows.defined() ? b_rows.data<std::int32_t>() : nullptr, J, C);
#endif
  }
  detail::expect_indices(op, "a_rows", a_rows, a.size(0), /*none_allowed=*/false);
  if (b_rows.defined()) detail::expect_indices(op, "b_rows", b_rows, b.size(0), /*none_allowed=*/false);
  detail::dispatch_real(t, [&]<class T>() {
    const T *x = a.data<T>(), *y = b.data<T>();
    const std::int32_t* ar = a_rows.data<std::int32_t>();
    const std::int32_t* br = b_rows.defined() ? b_rows.data<std::int32_t>() : nullptr;
    T* o = out.data<T>();
#pragma omp parallel for
    for (std::int64_t j = 0; j < J; ++j) {
      const T *xa = x + ar[j] * C, *yb = y + (br ? br[j] : j) * C;
      double dot = 0;
      for (std::int64_t c = 0; c < C; ++c) dot += double(xa[c]) * double(yb[c]);
      o[j] = static_cast<T>(dot);
    }
  });
}

}  // namespace moe::ops
