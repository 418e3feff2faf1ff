// GEMM and grouped GEMM entry points: OpenBLAS (kernels/cpu/blas.h) or cuBLASLt for GPU
// tensors. The group loop is the op's; each group's GEMM goes to one backend.
#include <type_traits>

#include "kernels/cpu/blas.h"
#include "kernels/cpu/common.h"
#include "kernels/cuda/ops.h"
#include "kernels/ops.h"
#include "kernels/ops/boundary.h"
#include "kernels/ops/device_gemm.h"

namespace moe::ops {
namespace detail {

void device_gemm(bool gpu, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                 std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc) {
  if (gpu) {
    if constexpr (kCudaBuilt) {
      if (M == 0 || N == 0) return;
      count_gemm(M, N, K);
      return cuda::f32_gemm(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
    }
  }
  cpu::gemm<float>(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace detail

std::int64_t gemm_flops() { return detail::gemm_flop_count.load(std::memory_order_relaxed); }
void reset_gemm_flops() { detail::gemm_flop_count.store(0, std::memory_order_relaxed); }

namespace {
// cpu::gemm on contiguous operands, on the device the tensors live on (the GPU: f32
// through cuBLASLt; validated by the entry points).
template <class T>
void gemm(bool gpu, bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const T* A, const T* B, T beta,
          T* C) {
  if constexpr (std::is_same_v<T, float>)
    detail::device_gemm(gpu, ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, beta, C, N);
  else cpu::gemm<T>(ta, tb, M, N, K, A, B, beta, C);  // f64: the CPU only (validated by the entry points)
}

// One group's forward/backward, shared by the plain and grouped entry points.
template <class T>
void gemm_fwd(bool gpu, T* y, const T* x, const T* w, std::int64_t M, std::int64_t N, std::int64_t K) {
  gemm<T>(gpu, false, true, M, N, K, x, w, T(0), y);  // y = x w^T
}
template <class T>
void gemm_bwd(bool gpu, T* dx, T* dw, const T* dy, const T* x, const T* w, std::int64_t M, std::int64_t N,
              std::int64_t K) {
  if (dx) gemm<T>(gpu, false, false, M, K, N, dy, w, T(0), dx);          // dx = dy w
  if (dw && M > 0) gemm<T>(gpu, true, false, N, K, M, dy, x, T(1), dw);  // dw += dy^T x
}
// Tensors on the GPU: f32 only.
detail::Placement gpu_f32(const char* op, DType t, std::initializer_list<const Tensor*> ts) {
  detail::Placement gpu = detail::on_gpu(op, ts);
  MOE_CHECK(!gpu || t == DType::f32, ShapeError, "{}: the GPU path takes f32, got {}", op, dtype_name(t));
  return gpu;
}

void check_offsets(const char* op, std::span<const std::int64_t> off, std::int64_t groups, std::int64_t M) {
  MOE_CHECK(static_cast<std::int64_t>(off.size()) == groups + 1 && off.front() == 0 && off.back() == M, ShapeError,
            "{}: offsets must have {} entries from 0 to {}", op, groups + 1, M);
  for (std::size_t g = 0; g + 1 < off.size(); ++g)
    MOE_CHECK(off[g] <= off[g + 1], ShapeError, "{}: offsets decrease at group {}", op, g);
}

// Validation + loop over groups; the plain matmul is the one-group case.
void grouped_fwd(const char* op, Tensor& y, const Tensor& x, const Tensor& w, std::span<const std::int64_t> offsets) {
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 2 && w.ndim() == 3, ShapeError, "{}: x {} must be 2-D and w {} 3-D", op, x.describe(),
            w.describe());
  const std::int64_t M = x.size(0), K = x.size(1), G = w.size(0), N = w.size(1);
  expect_tensor(op, "w", w, t, {G, N, K});
  expect_tensor(op, "y", y, t, {M, N});
  const auto gpu = gpu_f32(op, t, {&y, &x, &w});
  check_offsets(op, offsets, G, M);
  cpu::dispatch_real(t, [&]<class T>() {
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int64_t r = offsets[g], m = offsets[g + 1] - r;
      gemm_fwd<T>(bool(gpu), y.data<T>() + r * N, x.data<T>() + r * K, w.data<T>() + g * N * K, m, N, K);
    }
  });
}

void grouped_bwd(const char* op, Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                 std::span<const std::int64_t> offsets) {
  DType t = detail::real_dtype(op, x);
  MOE_CHECK(x.ndim() == 2 && w.ndim() == 3, ShapeError, "{}: x {} must be 2-D and w {} 3-D", op, x.describe(),
            w.describe());
  const std::int64_t M = x.size(0), K = x.size(1), G = w.size(0), N = w.size(1);
  expect_tensor(op, "w", w, t, {G, N, K});
  if (dw.defined()) expect_tensor(op, "dw", dw, t, {G, N, K});
  expect_tensor(op, "dy", dy, t, {M, N});
  if (dx.defined()) expect_tensor(op, "dx", dx, t, {M, K});
  const auto gpu = gpu_f32(op, t, {&dx, &dw, &dy, &x, &w});
  check_offsets(op, offsets, G, M);
  cpu::dispatch_real(t, [&]<class T>() {
    for (std::int64_t g = 0; g < G; ++g) {
      const std::int64_t r = offsets[g], m = offsets[g + 1] - r;
      gemm_bwd<T>(bool(gpu), dx.defined() ? dx.data<T>() + r * K : nullptr,
                  dw.defined() ? dw.data<T>() + g * N * K : nullptr, dy.data<T>() + r * N, x.data<T>() + r * K,
                  w.data<T>() + g * N * K, m, N, K);
    }
  });
}

// The plain matmul checks its 2-D operands itself, so errors show the caller's shapes,
// then runs as one group: w (N,K) -> (1,N,K).
void check_2d(const char* op, const Tensor& x, const Tensor& w) {
  MOE_CHECK(x.ndim() == 2 && w.ndim() == 2 && w.size(1) == x.size(1) && w.dtype() == x.dtype(), ShapeError,
            "{}: x {} and w {} must be (M,K) and (N,K) of one dtype", op, x.describe(), w.describe());
}
Tensor one_group(const Tensor& w) { return w.view({1, w.size(0), w.size(1)}); }

}  // namespace

void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w) {
  const char* op = "matmul_forward";
  check_2d(op, x, w);
  const std::int64_t offsets[] = {0, x.size(0)};
  grouped_fwd(op, y, x, one_group(w), offsets);
}

void matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const char* op = "matmul_backward";
  check_2d(op, x, w);
  if (dw.defined()) expect_tensor(op, "dw", dw, w.dtype(), w.shape());
  const std::int64_t offsets[] = {0, x.size(0)};
  Tensor dw3 = dw.defined() ? one_group(dw) : Tensor();
  grouped_bwd(op, dx, dw3, dy, x, one_group(w), offsets);
}

void grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, std::span<const std::int64_t> offsets) {
  grouped_fwd("grouped_matmul_forward", y, x, w, offsets);
}

void grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                             std::span<const std::int64_t> offsets) {
  grouped_bwd("grouped_matmul_backward", dx, dw, dy, x, w, offsets);
}

}  // namespace moe::ops
