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
// NOT YET RUN ON A GPU (written in sessions without one). The scales are packed into
// cuBLASLt's padded layouts first (kernels/fp8_scale_layout.h: VEC128 (T, pad4(rows)),
// BLK128x128 (row blocks, pad4(T)), TransformerEngine's GEMM_READY shapes); the layout is
// the assumption to check first if the gpu test against fp8_gemm_reference fails. A shape
// cuBLASLt refuses is retried with its operands padded by zeros (M, N to 16, K to 128, which
// changes no sum); only if that is refused too does the caller run the reference kernel,
// and ops::fp8_reference_fallbacks() counts it.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <fmt/format.h>

#include <memory>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/fp8_scale_layout.h"

#define MOE_CUBLAS_CHECK(call)                                                                               \
  do {                                                                                                       \
    cublasStatus_t moe_st_ = (call);                                                                         \
    if (moe_st_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      throw ::moe::DeviceError(                                                                              \
          fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #call, cublasLtGetStatusString(moe_st_))); \
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
  MOE_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(s.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
  cublasLtMatmulHeuristicResult_t h{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(lt().handle, s.op, s.a, s.b, s.d, s.d, s.pref, 1, &h, &found);
  if (may_lack && (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && found == 0))) return false;
  MOE_CUBLAS_CHECK(st);
  if (found == 0) throw DeviceError(fmt::format("cuBLASLt: no algorithm for this GEMM ({}x{}x{})", m, n, k));
  const float one = 1.f;
  MOE_CUBLAS_CHECK(cublasLtMatmul(lt().handle, s.op, &one, a, s.a, b, s.b, &beta, d, s.d, d, s.d, &h.algo,
                                  lt().workspace, kWorkspace,
                                  nullptr));  // the default stream: in order with every kernel here
  return true;
}

__global__ void pack_scales_kernel(float* dst, const float* src, bool vec, std::int64_t rows, std::int64_t tiles,
                                   std::int64_t outer, std::int64_t ld) {
  const std::int64_t j = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= outer * ld) return;
  const std::int64_t s = fp8_layout::source(vec, j / ld, j % ld, rows, tiles);
  dst[j] = s < 0 ? 1.f : src[s];
}

// A device copy of scales (rows, T) in cuBLASLt's padded layout (fp8_scale_layout.h).
struct PackedScales : Scratch<float> {
  PackedScales(const float* s, bool vec, std::int64_t rows, std::int64_t T)
      : Scratch<float>((vec ? fp8_layout::vec128(rows, T) : fp8_layout::blk128(rows, T)).size()) {
    const auto p = vec ? fp8_layout::vec128(rows, T) : fp8_layout::blk128(rows, T);
    const auto n = p.size();
    if (n == 0) return;
    pack_scales_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(this->p, s, vec, rows, T, p.outer, p.ld);
    launched();
  }
};

// Rows (R, K) of E4M3 codes copied into zeros (Rp, Kp): a shape cuBLASLt takes, same sums.
struct PaddedCodes : Scratch<std::uint8_t> {
  PaddedCodes(const std::uint8_t* q, std::int64_t R, std::int64_t K, std::int64_t Rp, std::int64_t Kp)
      : Scratch<std::uint8_t>(Rp * Kp) {
    MOE_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<std::size_t>(Rp * Kp), 0));
    MOE_CUDA_CHECK(cudaMemcpy2DAsync(p, std::size_t(Kp), q, std::size_t(K), std::size_t(K), std::size_t(R),
                                     cudaMemcpyDeviceToDevice, 0));
  }
};
__global__ void pad_rows_kernel(float* dst, const float* src, std::int64_t n, std::int64_t total) {
  const std::int64_t j = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j < total) dst[j] = j < n ? src[j] : 1.f;
}
// Scales (R, T) as (Rp, T), the extra rows 1 (their codes are zero).
struct PaddedRows : Scratch<float> {
  PaddedRows(const float* s, std::int64_t R, std::int64_t T, std::int64_t Rp) : Scratch<float>(Rp * T) {
    if (Rp * T == 0) return;
    pad_rows_kernel<<<static_cast<unsigned>((Rp * T + 255) / 256), 256>>>(p, s, R * T, Rp * T);
    launched();
  }
};

// Row-major C (M,N) = op(A) op(B) + beta C is column-major C^T (N,M) = op(B)^T op(A)^T:
// cuBLASLt's A is our B, its B our A, each transposed when ours is.
// (A linear's y = a b^T, ta false and tb true, is cuBLASLt's "TN" form, the one FP8 needs.)
bool run_row_major(Desc& s, cudaDataType_t in, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K,
                   const void* A, std::int64_t lda, const void* B, std::int64_t ldb, float beta, float* C,
                   std::int64_t ldc, bool may_lack = false) {
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

void bf16_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const std::uint16_t* A,
               std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  Desc s;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  run_row_major(s, CUDA_R_16BF, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

namespace {
// One cuBLASLt block-scaled call on operands as given (K a multiple of 128 or not).
bool sm90_fp8_call(float* y, const std::uint8_t* qa, const float* sa, const std::uint8_t* qb, const float* sb,
                   std::int64_t M, std::int64_t N, std::int64_t K, bool b_rows) {
  const std::int64_t T = (K + 127) / 128;
  const PackedScales sa_p(sa, /*vec=*/true, M, T);
  const PackedScales sb_p(sb, /*vec=*/b_rows, b_rows ? N : (N + 127) / 128, T);
  Desc s;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const std::int32_t blk = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, vec = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  const std::int32_t b_mode = b_rows ? vec : blk;  // cuBLASLt's A is our b
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &b_mode, sizeof b_mode));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &vec, sizeof vec));
  const float *sb_ptr = sb_p.p, *sa_ptr = sa_p.p;
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sb_ptr, sizeof sb_ptr));
  MOE_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sa_ptr, sizeof sa_ptr));
  return run_row_major(s, CUDA_R_8F_E4M3, false, true, M, N, K, qa, K, qb, K, 0.f, y, N, /*may_lack=*/true);
}
std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }
}  // namespace

bool sm90_fp8_gemm(float* y, const std::uint8_t* qa, const float* sa, const std::uint8_t* qb, const float* sb,
                   std::int64_t M, std::int64_t N, std::int64_t K, bool b_rows) {
  if (M == 0 || N == 0) return true;
  if (sm90_fp8_call(y, qa, sa, qb, sb, M, N, K, b_rows)) return true;
  // A shape cuBLASLt refuses (per-expert M of a few rows, K off its tile): zeros padded on.
  // Padding K to 128 keeps T; padded rows of b get scale rows of 1 (b_rows) or fall in its
  // last 128-row block (rounding N up to 16 never adds a block).
  const std::int64_t Mp = round_up(M, 16), Np = round_up(N, 16), Kp = round_up(K, 128), T = (K + 127) / 128;
  if (Mp == M && Np == N && Kp == K) return false;
  const PaddedCodes a(qa, M, K, Mp, Kp), b(qb, N, K, Np, Kp);
  const PaddedRows sa_p(sa, M, T, Mp);
  const std::unique_ptr<PaddedRows> sb_rows = b_rows ? std::make_unique<PaddedRows>(sb, N, T, Np) : nullptr;
  const float* sb_ptr = b_rows ? sb_rows->p : sb;
  Scratch<float> yp(Mp * Np);
  if (!sm90_fp8_call(yp.p, a.p, sa_p.p, b.p, sb_ptr, Mp, Np, Kp, b_rows)) return false;
  MOE_CUDA_CHECK(cudaMemcpy2DAsync(y, std::size_t(N) * sizeof(float), yp.p, std::size_t(Np) * sizeof(float),
                                   std::size_t(N) * sizeof(float), std::size_t(M), cudaMemcpyDeviceToDevice, 0));
  return true;
}

}  // namespace moe::cuda
