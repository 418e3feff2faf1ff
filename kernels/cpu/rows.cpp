// Row movement: gather, CSR weighted row sums and row-pair dot products (kernels/ops.h).
#include <cstring>

#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
namespace {
void check_rows(const char* op, const char* what, std::span<const std::int32_t> rows, std::int64_t n) {
  for (std::size_t j = 0; j < rows.size(); ++j)
    MOE_CHECK(rows[j] >= 0 && rows[j] < n, ShapeError, "{}: {}[{}] = {} outside [0, {})", op, what, j, rows[j], n);
}
void expect_matrix(const char* op, const char* name, const Tensor& t) {
  MOE_CHECK(t.defined() && t.ndim() == 2, ShapeError, "{}: {} {} must be 2-D", op, name, t.describe());
}
}  // namespace

void gather_rows(Tensor& out, const Tensor& in, std::span<const std::int32_t> src) {
  const char* op = "gather_rows";
  expect_matrix(op, "in", in);
  const auto R = static_cast<std::int64_t>(src.size());
  expect_tensor(op, "out", out, in.dtype(), {R, in.size(1)});
  const auto gpu = detail::on_gpu(op, {&out, &in});
  check_rows(op, "src", src, in.size(0));
  const std::size_t bytes = dtype_size(in.dtype()) * static_cast<std::size_t>(in.size(1));
  if (gpu) {
#ifdef MOE_WITH_CUDA
    return cuda::gather_rows(out.raw(), in.raw(), src.data(), R, bytes);
#endif
  }
  const auto* s = static_cast<const char*>(in.raw());
  auto* d = static_cast<char*>(out.raw());
#pragma omp parallel for
  for (std::int64_t r = 0; r < R; ++r) std::memcpy(d + std::size_t(r) * bytes, s + std::size_t(src[r]) * bytes, bytes);
}

void gather_sum(Tensor& out, const Tensor& in, const RowSums& sums, const Tensor& weights, bool accumulate) {
  const char* op = "gather_sum";
  const DType t = detail::real_dtype(op, in);
  expect_matrix(op, "in", in);
  const auto M = static_cast<std::int64_t>(sums.offsets.size()) - 1, C = in.size(1);
  MOE_CHECK(M >= 0 && sums.offsets[0] == 0, ShapeError, "{}: offsets must start at 0 and have one entry per output row plus one", op);
  expect_tensor(op, "out", out, t, {M, C});
  const auto nnz = static_cast<std::int64_t>(sums.src.size());
  for (std::int64_t m = 0; m < M; ++m)
    MOE_CHECK(sums.offsets[m + 1] >= sums.offsets[m], ShapeError, "{}: offsets decrease at output row {}", op, m);
  MOE_CHECK(sums.offsets[M] == nnz, ShapeError, "{}: offsets end at {}, src has {} entries", op, sums.offsets[M], nnz);
  check_rows(op, "src", sums.src, in.size(0));
  if (weights.defined()) {
    MOE_CHECK(weights.dtype() == t, ShapeError, "{}: weights {} must be {} like in", op, weights.describe(), dtype_name(t));
    MOE_CHECK(static_cast<std::int64_t>(sums.widx.size()) == nnz, ShapeError, "{}: widx has {} entries, src {}", op,
              sums.widx.size(), nnz);
    check_rows(op, "widx", sums.widx, weights.numel());
  }
  const auto gpu = detail::on_gpu(op, {&out, &in, &weights});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, in.describe());
    return cuda::gather_sum(out.data<float>(), in.data<float>(), sums.offsets.data(), sums.src.data(),
                            weights.defined() ? sums.widx.data() : nullptr,
                            weights.defined() ? weights.data<float>() : nullptr, M, C, nnz, accumulate);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const T* x = in.data<T>();
    const T* w = weights.defined() ? weights.data<T>() : nullptr;
    T* y = out.data<T>();
#pragma omp parallel for
    for (std::int64_t m = 0; m < M; ++m) {
      T* ym = y + m * C;
      std::int32_t j = sums.offsets[m];
      const std::int32_t end = sums.offsets[m + 1];
      auto term = [&](std::int32_t e, std::int64_t c) { return w ? w[sums.widx[e]] * x[sums.src[e] * C + c] : x[sums.src[e] * C + c]; };
      if (!accumulate) {
        if (j == end) {
          std::fill_n(ym, C, T(0));
          continue;
        }
        for (std::int64_t c = 0; c < C; ++c) ym[c] = term(j, c);
        ++j;
      }
      for (; j < end; ++j)
        for (std::int64_t c = 0; c < C; ++c) ym[c] += term(j, c);
    }
  });
}

void row_dot(Tensor& out, const Tensor& a, std::span<const std::int32_t> a_rows, const Tensor& b,
             std::span<const std::int32_t> b_rows) {
  const char* op = "row_dot";
  const DType t = detail::real_dtype(op, a);
  expect_matrix(op, "a", a);
  const auto J = static_cast<std::int64_t>(a_rows.size()), C = a.size(1);
  MOE_CHECK(b_rows.size() == a_rows.size(), ShapeError, "{}: a_rows has {} entries, b_rows {}", op, a_rows.size(), b_rows.size());
  expect_matrix(op, "b", b);
  expect_tensor(op, "b", b, t, {b.size(0), C});
  expect_tensor(op, "out", out, t, {J});
  check_rows(op, "a_rows", a_rows, a.size(0));
  check_rows(op, "b_rows", b_rows, b.size(0));
  const auto gpu = detail::on_gpu(op, {&out, &a, &b});
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, a.describe());
    return cuda::row_dot(out.data<float>(), a.data<float>(), a_rows.data(), b.data<float>(), b_rows.data(), J, C);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const T *x = a.data<T>(), *y = b.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for
    for (std::int64_t j = 0; j < J; ++j) {
      double dot = 0;
      for (std::int64_t c = 0; c < C; ++c) dot += double(x[a_rows[j] * C + c]) * double(y[b_rows[j] * C + c]);
      o[j] = static_cast<T>(dot);
    }
  });
}

}  // namespace moe::ops
