// Row-major GEMM through OpenBLAS for the CPU ops (internal header).
#pragma once
#include <cblas.h>

#include <atomic>
#include <cstdint>
#include <type_traits>

namespace moe::ops::detail {

// 2*M*N*K of every GEMM run (ops::gemm_flops()); defined in gemm.cpp.
extern std::atomic<std::int64_t> gemm_flop_count;

// C (M,N) = op(A) op(B) + beta * C, row-major; lda/ldb/ldc are row strides in elements, so a
// head's slice of a (B,T,H,D) tensor is addressed in place (lda = H*D).
template <class T>
void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda, const T* B,
          std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  gemm_flop_count.fetch_add(2 * M * N * K, std::memory_order_relaxed);
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  const auto m = static_cast<blasint>(M), n = static_cast<blasint>(N), k = static_cast<blasint>(K);
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb),
                beta, C, static_cast<blasint>(ldc));
  else
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, 1.0, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta,
                C, static_cast<blasint>(ldc));
}

// The f32 gemm above on the device its operands live on: OpenBLAS, or cuBLASLt for device
// pointers (FP32 without TF32; counted alike). Defined in gemm.cpp.
void device_gemm(bool gpu, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                 std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);

// Contiguous operands: leading dimensions follow from the shapes.
template <class T>
void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B, T beta, T* C) {
  gemm<T>(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

}  // namespace moe::ops::detail
