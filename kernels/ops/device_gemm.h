// The f32 GEMM on the device its operands live on, for entry points that compose GEMMs
// (attention's GPU fallback): cpu::gemm's contract (row-major, row strides lda/ldb/ldc) through
// OpenBLAS, or cuBLASLt for device pointers (FP32 without TF32; counted alike). Internal.
#pragma once
#include <cstdint>

namespace moe::ops::detail {

void device_gemm(bool gpu, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                 std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);

}  // namespace moe::ops::detail
