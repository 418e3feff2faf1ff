// GEMMs on the GPU through cuBLASLt (ops.h dispatches here for device tensors):
//   f32_gemm       FP32 operands and accumulation (no TF32), any transposes and strides.
//   bf16_gemm      BF16 operands, FP32 accumulation and output, any transposes and strides.
//   sm90_fp8_gemm  E4M3 operands with DeepSeek-V3's fine-grained scales: the activation per
//                  1x128 tile (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F), the weight per
//                  128x128 block (BLK128x128_32F); FP32 output. Its reference is
//                  fp8_gemm_reference (fp8.cu), bit for bit the CPU's; cuBLASLt sums in its
//                  own order, so the two agree to FP32 accumulation order, not bitwise.
// Row-major y (M,N) = a (M,K) b^T is column-major y^T (N,M) = b (N,K) a^T: cuBLASLt's A is our
// b (K x N column-major, transposed: the "TN" form FP8 needs on Hopper), its B our a.
//
// NOT YET RUN ON A GPU (written in a session without one). The scale layouts below are the
// assumption to check first if the gpu test against fp8_gemm_reference fails:
//   - VEC128 (our a): one scale per 128 along K for each of the M rows, stored with M
//     fastest ("outer-dim major"), so sa (M, T) is transposed to (T, M) first;
//   - BLK128x128 (our b): (ceil(N/128), T) row-major as quantize_128x128 writes it, which is
//     K-blocks fastest, the column-major order of the (K x N) operand's blocks.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <fmt/format.h>

#include <memory>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

#define MOE_CUBLAS_CHECK(call)                                                                              \
  do {                                                                                                      \
    cublasStatus_t moe_st_ = (call);                                                                        \
    if (moe_st_ != CUBLAS_STATUS_SUCCESS)                                                                   \
      throw ::moe::DeviceError(fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #call,               \
                                           cublasLtGetStatusString(moe_st_)));                              \
  } while (0)

namespace moe::cuda {
namespace {
constexpr std::size_t kWorkspace = 32u << 20;

struct Lt {  // one handle and workspace per process, made on first use
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  Lt() {
    MOE_CUBLAS_CHECK(cublasLtCreate(&handle));
    MOE_CUDA_CHECK(cudaMalloc(&workspace, kWorkspace));
  }
};
Lt& lt() {
  static Lt instance;
  return instance;
}

// Descriptors released whatever throws.
struct Desc {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~Desc() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// The one cuBLASLt call: d = op(a) op(b) + beta d, column-major, a and b of type `in` with
// their stored (rows, cols, ld) following from the transposes, d FP32 (m x n, ld ldd).
// may_lack: return false instead of throwing when cuBLASLt has no algorithm for it.
bool run(Desc& s, cudaDataType_t in, cublasOperation_t ta, cublasOperation_t tb, std::uint64_t m, std::uint64_t n,
         std::uint64_t k, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, float beta, float* d,
         std::int64_t ldd, bool may_lack = false) {
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
  const bool at = ta == CUBLAS_OP_T, bt = tb == CUBLAS_OP_T;
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s.a, in, at ? k : m, at ? m : k, lda));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s.b, in, bt ? n : k, bt ? k : n, ldb));
  MOE_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s.d, CUDA_R_32F, m, n, ldd));
  MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&s.pref));
  const std::size_t ws = kWorkspace;
  MOE_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(s.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t h{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt().handle, s.op, s.a, s.b, s.d, s.d, s.pref, 1, &h, &found);
  if (may_lack && (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0))) return false;
  MOE_CUBLAS_CHECK(st);
  if (found == 0) throw DeviceError(fmt::format("cuBLASLt: no algorithm for this GEMM ({}x{}x{})", m, n, k));
  const float one = 1.f;
  MOE_CUBLAS_CHECK(cublasLtMatmul(lt().handle, s.op, &one, a, s.a, b, s.b, &beta, d, s.d, d, s.d, &h.algo, lt().workspace,
                                  kWorkspace, nullptr));  // the default stream: in order with every kernel here
  return true;
}

// A device copy of scales (R, T) transposed to (T, R): R fastest, the "outer-dim major" order
// cuBLASLt reads VEC128 scales in.
struct OuterMajor : Scratch<float> {
  OuterMajor(const float* s, std::int64_t R, std::int64_t T) : Scratch<float>(R * T) { transpose(p, s, R, T); }
};

// Row-major C (M,N) = op(A) op(B) + beta C is column-major C^T (N,M) = op(B)^T op(A)^T:
// cuBLASLt's A is our B, its B our A, each transposed when ours is.
// (A linear's y = a b^T, ta false and tb true, is cuBLASLt's "TN" form, the one FP8 needs.)
bool run_row_major(Desc& s, cudaDataType_t in, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
                   const void* A, std::int64_t lda, const void* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc,
                   bool may_lack = false) {
  return run(s, in, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<std::uint64_t>(N),
             static_cast<std::uint64_t>(M), static_cast<std::uint64_t>(K), B, ldb, A, lda, beta, C, ldc, may_lack);
}
}  // namespace

void f32_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
              const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  Desc s;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));  // full FP32, no TF32
  run_row_major(s, CUDA_R_32F, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

void bf16_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const std::uint16_t* A, std::int64_t lda,
               const std::uint16_t* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  Desc s;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  run_row_major(s, CUDA_R_16BF, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

bool sm90_fp8_gemm(float* y, const std::uint8_t* qa, const float* sa, const std::uint8_t* qb, const float* sb,
                   std::int64_t M, std::int64_t N, std::int64_t K, bool b_rows) {
  if (M == 0 || N == 0) return true;
  // cuBLASLt may have no kernel for a pairing (1x128 x 1x128, a weight gradient's) or a shape
  // (K not a multiple of its tile): the caller then runs the reference.
  const std::int64_t T = (K + 127) / 128;
  const OuterMajor sa_t(sa, M, T);
  const std::unique_ptr<OuterMajor> sb_t = b_rows ? std::make_unique<OuterMajor>(sb, N, T) : nullptr;
  Desc s;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const std::int32_t blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  const std::int32_t b_mode = b_rows ? vec : blk;  // cuBLASLt's A is our b
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &b_mode, sizeof b_mode));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec));
  const float* sb_ptr = b_rows ? sb_t->p : sb;
  const float* sa_ptr = sa_t.p;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sb_ptr, sizeof sb_ptr));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sa_ptr, sizeof sa_ptr));
  return run_row_major(s, CUDA_R_8F_E4M3, false, true, M, N, K, qa, K, qb, K, 0.f, y, N, /*may_lack=*/true);
}

}  // namespace moe::cuda
