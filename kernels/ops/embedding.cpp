#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {
namespace {
// The table (V,C) and tokens (N), checked; returns (N, V, C). Ids on the host are checked
// here; ids on a device are the caller's to check on the host before they go over
// (Transformer does), so that no call waits on a copy back.
struct Dims {
  std::int64_t N, V, C;
};
Dims check(const char* op, const char* table_name, const Tensor& table, const Tensor& tokens, bool sharded) {
  MOE_CHECK(table.ndim() == 2 && tokens.ndim() == 1, ShapeError, "{}: {} {} must be 2-D, tokens {} 1-D", op, table_name,
            table.describe(), tokens.describe());
  const Dims d{tokens.size(0), table.size(0), table.size(1)};
  expect_tensor(op, "tokens", tokens, DType::i32, {d.N});
  expect_ids(op, "token", tokens, sharded ? -1 : 0, d.V);
  return d;
}
}  // namespace

void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, bool sharded) {
  const char* op = "embedding_forward";
  DType t = detail::real_dtype(op, table);
  const auto [N, V, C] = check(op, "table", table, tokens, sharded);
  expect_tensor(op, "out", out, t, {N, C});
  const auto gpu = detail::on_gpu(op, {&out, &tokens, &table});
  detail::expect_f32_on_gpu(bool(gpu), op, table);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::embedding_forward(out.data<float>(), tokens.data<std::int32_t>(), table.data<float>(), N, C);
  }
  cpu::embedding_forward(out, tokens, table);
}

void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens, bool sharded) {
  const char* op = "embedding_backward";
  DType t = detail::real_dtype(op, dtable);
  const auto [N, V, C] = check(op, "dtable", dtable, tokens, sharded);
  expect_tensor(op, "dout", dout, t, {N, C});
  const auto gpu = detail::on_gpu(op, {&dtable, &dout, &tokens});
  detail::expect_f32_on_gpu(bool(gpu), op, dtable);
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::embedding_backward(dtable.data<float>(), dout.data<float>(), tokens.data<std::int32_t>(), N, C);
  }
  cpu::embedding_backward(dtable, dout, tokens);
}

}  // namespace moe::ops
