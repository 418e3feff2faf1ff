// Row-major GEMM through OpenBLAS for the CPU kernels (internal header).
#pragma once
#include <cblas.h>

#include <cstdint>
#include <type_traits>

#include "kernels/ops/boundary.h"

namespace moe::cpu {

// C (M,N) = op(A) op(B) + beta * C, row-major; lda/ldb/ldc are row strides in elements, so a
// head's slice of a (B,T,H,D) tensor is addressed in place (lda = H*D).
template <class T>
void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, std::int64_t lda, const T* B,
          std::int64_t ldb, T beta, T* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  ops::detail::count_gemm(M, N, K);
  const auto opa = ta ? CblasTrans : CblasNoTrans, opb = tb ? CblasTrans : CblasNoTrans;
  const auto m = static_cast<blasint>(M), n = static_cast<blasint>(N), k = static_cast<blasint>(K);
  if constexpr (std::is_same_v<T, float>)
    cblas_sgemm(CblasRowMajor, opa, opb, m, n, k, 1.0f, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb),
                beta, C, static_cast<blasint>(ldc));
  else
    cblas_dgemm(CblasRowMajor, opa, opb, m, n, k, 1.0, A, static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta,
                C, static_cast<blasint>(ldc));
}

// Contiguous operands: leading dimensions follow from the shapes.
template <class T>
void gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B, T beta, T* C) {
  gemm<T>(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, beta, C, N);
}

}  // namespace moe::cpu
