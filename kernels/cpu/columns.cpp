#include <cstring>

#include "kernels/cpu/kernels.h"

namespace moe::cpu {

void copy_columns(Tensor& out, std::int64_t out_col, const Tensor& in, std::int64_t in_col, std::int64_t width,
                  std::int64_t rep) {
  const std::size_t e = dtype_size(in.dtype()), bytes = e * std::size_t(width);
  const std::size_t out_row = e * std::size_t(out.size(1)), in_row = e * std::size_t(in.size(1));
  char* to = static_cast<char*>(out.raw()) + e * std::size_t(out_col);
  const char* from = static_cast<const char*>(in.raw()) + e * std::size_t(in_col);
  const std::int64_t R = out.size(0);
#pragma omp parallel for if (R * width > (1 << 16))
  for (std::int64_t r = 0; r < R; ++r)
    std::memcpy(to + std::size_t(r) * out_row, from + std::size_t(r / rep) * in_row, bytes);
}

}  // namespace moe::cpu
