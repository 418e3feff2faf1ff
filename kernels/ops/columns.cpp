// ops::copy_columns: a block of columns between row-aligned matrices (kernels/ops.h); kernels
// in cpu/columns.cpp and cuda/basic.cu.
#include "kernels/cpu/kernels.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"

namespace moe::ops {

void copy_columns(Tensor& out, std::int64_t out_col, const Tensor& in, std::int64_t in_col, std::int64_t width,
                  std::int64_t rep) {
  const char* op = "copy_columns";
  MOE_CHECK(out.defined() && in.defined() && out.ndim() == 2 && in.ndim() == 2 && out.dtype() == in.dtype(), ShapeError,
            "{}: out {} and in {} must be matrices of one dtype", op, out.describe(), in.describe());
  MOE_CHECK(rep >= 1 && out.size(0) == in.size(0) * rep, ShapeError, "{}: out {} must have {} x {} rows of in {}", op,
            out.describe(), rep, in.size(0), in.describe());
  MOE_CHECK(width >= 0 && out_col >= 0 && in_col >= 0 && out_col + width <= out.size(1) && in_col + width <= in.size(1),
            ShapeError, "{}: columns [{}, {}) of out {} or [{}, {}) of in {} out of range", op, out_col,
            out_col + width, out.describe(), in_col, in_col + width, in.describe());
  MOE_CHECK(out.numel() == 0 || !out.same_start(in), ShapeError, "{}: out must not be in", op);
  const auto gpu = detail::on_gpu(op, {&out, &in});
  const std::size_t e = dtype_size(in.dtype());
  if (gpu) {
    if constexpr (detail::kCudaBuilt)
      return cuda::copy_columns(out.raw(), e * std::size_t(out.size(1)), e * std::size_t(out_col), in.raw(),
                                e * std::size_t(in.size(1)), e * std::size_t(in_col), e * std::size_t(width),
                                out.size(0), rep);
  }
  cpu::copy_columns(out, out_col, in, in_col, width, rep);
}

}  // namespace moe::ops
