#include "kernels/cpu/common.h"
#include "kernels/ops.h"
#ifdef MOE_WITH_CUDA
#include "kernels/cuda/ops.h"
#endif

namespace moe::ops {
namespace {
// Ids on the host are checked here; ids on a device are the caller's to check on the host
// before they go over (Transformer does), so that no call waits on a copy back.
void check_tokens(const char* op, const Tensor& tokens, std::int64_t V, bool sharded) {
  expect_ids(op, "token", tokens, sharded ? -1 : 0, V);
}
}  // namespace

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, bool sharded) {
  const char* op = "embedding_forward";
  DType t = detail::real_dtype(op, table);
  MOE_CHECK(table.ndim() == 2 && tokens.ndim() == 1, ShapeError, "{}: table {} must be 2-D, tokens {} 1-D", op,
            table.describe(), tokens.describe());
  const std::int64_t N = tokens.size(0), V = table.size(0), C = table.size(1);
  expect_tensor(op, "tokens", tokens, DType::i32, {N});
  expect_tensor(op, "out", out, t, {N, C});
  const auto gpu = detail::on_gpu(op, {&out, &tokens, &table});
  check_tokens(op, tokens, V, sharded);
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, table.describe());
    return cuda::embedding_forward(out.data<float>(), tokens.data<std::int32_t>(), table.data<float>(), N, C);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const std::int32_t* tok = tokens.data<std::int32_t>();
    const T* w = table.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t c = 0; c < C; ++c) o[n * C + c] = tok[n] < 0 ? T(0) : w[tok[n] * C + c];
  });
}

void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens, bool sharded) {
  const char* op = "embedding_backward";
  DType t = detail::real_dtype(op, dtable);
  MOE_CHECK(dtable.ndim() == 2 && tokens.ndim() == 1, ShapeError, "{}: dtable {} must be 2-D, tokens {} 1-D", op,
            dtable.describe(), tokens.describe());
  const std::int64_t N = tokens.size(0), V = dtable.size(0), C = dtable.size(1);
  expect_tensor(op, "tokens", tokens, DType::i32, {N});
  expect_tensor(op, "dout", dout, t, {N, C});
  const auto gpu = detail::on_gpu(op, {&dtable, &dout, &tokens});
  check_tokens(op, tokens, V, sharded);
  if (gpu) {
#ifdef MOE_WITH_CUDA
    MOE_CHECK(t == DType::f32, ShapeError, "{}: the CUDA kernel takes f32, got {}", op, dtable.describe());
    return cuda::embedding_backward(dtable.data<float>(), dout.data<float>(), tokens.data<std::int32_t>(), N, C);
#endif
  }
  detail::dispatch_real(t, [&]<class T>() {
    const std::int32_t* tok = tokens.data<std::int32_t>();
    const T* d = dout.data<T>();
    T* dw = dtable.data<T>();
    // Serial over rows: two rows with the same token add into the same table row.
    for (std::int64_t n = 0; n < N; ++n)
      if (tok[n] >= 0)
        for (std::int64_t c = 0; c < C; ++c) dw[tok[n] * C + c] += d[n * C + c];
  });
}

}  // namespace moe::ops
