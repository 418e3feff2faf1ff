// CUDA kernels behind the op API (kernels/ops.h dispatches here for device tensors).
// Raw pointers: the Tensor-level entry point has already validated shapes and devices.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/router_select.h"

namespace moe::cuda {

// h = silu(gate) * up, elementwise over n floats (device pointers).
void swiglu_forward(float* h, const float* gate, const float* up, std::int64_t n);

// basic.cu: the row-wise and elementwise ops, f32, device pointers, shapes validated by the
// ops.h entry points. adamw_step takes the spec already in f32 (decay = 1 - lr*wd, bias
// corrections bc1, bc2). cross_entropy: losses (N) when non-null; dlogits (N,V) from
// dlosses when non-null.
void adamw_step(float* p, float* m, float* v, const float* g, std::int64_t n, float lr, float beta1, float beta2,
                float eps, float decay, float bc1, float bc2);
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, std::int64_t N, std::int64_t C, float eps);
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      std::int64_t N, std::int64_t C);  // dx may be null
void embedding_forward(float* out, const std::int32_t* tokens, const float* table, std::int64_t N, std::int64_t C);
void embedding_backward(float* dtable, const float* dout, const std::int32_t* tokens, std::int64_t N, std::int64_t C);
void cross_entropy(float* losses, float* dlogits, const float* dlosses, const float* logits,
                   const std::int32_t* targets, std::int64_t N, std::int64_t V);
// y (B,T,H,D) = x rotated pairwise by the angle tables cs, sn (T, D/2) (the CPU builds them,
// so both rotate by the same angles); y may alias x.
// layout 0: half pairs in and out; 1: interleaved pairs in, split out (forward); 2: split in,
// interleaved out (backward). y may alias x for layout 0 only. positions (B*T), or null:
// the table row of each token (its place in its document), else its place in the sequence.
void rope(float* y, const float* x, const float* cs, const float* sn, const std::int32_t* positions, std::int64_t B,
          std::int64_t T, std::int64_t H, std::int64_t D, int layout);
// ops::copy_columns on raw bytes: out rows of out_stride bytes, in rows of in_stride bytes.
void copy_columns(void* out, std::size_t out_stride, std::size_t out_off, const void* in, std::size_t in_stride,
                  std::size_t in_off, std::size_t bytes, std::int64_t rows, std::int64_t rep);
void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, std::int64_t n);
// Elementwise helpers: y += alpha x; y *= alpha; sum of x^2 in double (a fixed grid, so the
// same sum every run); f32 <-> bf16 (round to nearest even) over n elements.
void accumulate(float* y, const float* x, float alpha, std::int64_t n);
void scale(float* y, float alpha, std::int64_t n);
double sum_squares(const float* x, std::int64_t n);
// total[0] += x[0] + x[1] + ... in double, in index order (one thread: the CPU's bits).
void sum_into(double* total, const float* x, std::int64_t n);
void convert_bf16(void* y, const void* x, std::int64_t n, bool to_bf16);

// y (C,R) = x (R,C)^T, f32.
void transpose(float* y, const float* x, std::int64_t R, std::int64_t C);
// x (R,K) f32 = E4M3 codes q times their 1x128 tile's scale (scales (R, ceil(K/128))).
void dequantize_1x128(float* x, const std::uint8_t* q, const float* scales, std::int64_t R, std::int64_t K);

// Attention's masked row softmax over rows/T blocks of (T,T) scores, in place: row i of a
// block scaled, softmax over columns 0..i, zeros above (ops::attention_forward's probs); and
// its backward, dS = P (dP - sum P dP) * scale in place of dP. With positions (B*T) (null:
// none), the blocks are (B, heads) and row i of sequence b keeps columns i - positions[b*T+i]
// .. i only (document masking); the backward needs none (P is zero outside).
void causal_softmax(float* P, std::int64_t rows, std::int64_t T, float scale, const std::int32_t* positions,
                    std::int64_t heads);
void causal_softmax_backward(float* dS, const float* P, std::int64_t rows, std::int64_t T, float scale);

// sdpa.cpp (builds with cuDNN, MOE_WITH_CUDNN): causal GQA attention through cuDNN's fused
// SDPA in BF16, f32 tensors in and out (converted here), q/out (B,T,H,D), k/v (B,T,Hkv,D),
// lse (B,H,T) f32; backward assigns dq, dk, dv.
void sdpa_forward(float* out, float* lse, const float* q, const float* k, const float* v, std::int64_t B,
                  std::int64_t T, std::int64_t H, std::int64_t Hkv, std::int64_t D);
void sdpa_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t Hkv,
                   std::int64_t D);

// FP8 (E4M3) fine-grained quantisation, bit for bit ops::quantize_1x128 (rows 1) and
// quantize_128x128 (rows 128): x (R,K) -> q (R,K) codes, one scale per block of rows x 128,
// scales (ceil(R/rows), ceil(K/128)).
void quantize(std::uint8_t* q, float* scales, const float* x, std::int64_t R, std::int64_t K, int rows, bool pow2);
// cuBLASLt (gemm.cu). f32_gemm and bf16_gemm: detail::gemm's contract on device pointers
// (row-major C (M,N) f32 = op(A) op(B) + beta C with row strides lda, ldb, ldc); f32_gemm
// computes in FP32 without TF32, bf16_gemm takes BF16 operands (raw bits) and accumulates in
// FP32. sm90_fp8_gemm: y (M,N) f32 = a (M,K) b^T from E4M3 codes, sa (M, ceil(K/128)) per
// 1x128 tile of a, sb (ceil(N/128), ceil(K/128)) per 128x128 block of b; FP32 accumulation
// in cuBLASLt's order (fp8_gemm_reference is the oracle).
void f32_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
              const float* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);
void bf16_gemm(bool ta, bool tb, std::int64_t M, std::int64_t N, std::int64_t K, const std::uint16_t* A,
               std::int64_t lda, const std::uint16_t* B, std::int64_t ldb, float beta, float* C, std::int64_t ldc);
// b_rows: sb per 1x128 tile of b, (N, ceil(K/128)) (a weight gradient's operands); returns
// false, having run nothing, when this cuBLASLt has no kernel for the pairing or the shape.
bool sm90_fp8_gemm(float* y, const std::uint8_t* qa, const float* sa, const std::uint8_t* qb, const float* sb,
                   std::int64_t M, std::int64_t N, std::int64_t K, bool b_rows);
// ops::fp8_gemm's definition, bit for bit, one thread per output (the GPU-side oracle).
// b_rows: sb per 1x128 tile of b (N, ceil(K/128)), else per 128x128 block.
void fp8_gemm_reference(float* y, const std::uint8_t* qa, const float* sa, const std::uint8_t* qb, const float* sb,
                        std::int64_t M, std::int64_t N, std::int64_t K, bool b_rows);

// rows.cu: ops::gather_rows, combine_rows, row_dot; index arrays on the device (src -1: a
// zero row; slots -1: no term). weights null: unweighted sums; b_rows null: row j.
void gather_rows(void* out, const void* in, const std::int32_t* src, std::int64_t R, std::size_t row_bytes);
void combine_rows(float* out, const float* in, const std::int32_t* slots, const float* weights, std::int64_t M,
                  std::int64_t W, std::int64_t C, bool accumulate);
void row_dot(float* out, const float* a, const std::int32_t* a_rows, const float* b, const std::int32_t* b_rows,
             std::int64_t J, std::int64_t C);

// routing.cu: the dispatch plan's ops (kernels/ops.h), device pointers; counts may be null.
void route_capacity(std::int32_t* kept, std::int32_t* counts, const std::int32_t* index, std::int64_t N, std::int64_t K,
                    std::int64_t E, std::int64_t capacity, std::int64_t n0, std::int64_t n1);
void route_pairs(std::int32_t* pairs, std::int32_t* fan_out, const std::int32_t* kept, std::int64_t N, std::int64_t K,
                 std::int64_t P, std::int64_t experts_per_rank);
void counting_sort(std::int32_t* dest, std::int32_t* counts, const std::int32_t* keys, std::int64_t n,
                   std::int64_t bins, std::int64_t divisor);
void pick_instances(std::int32_t* instances, std::int32_t* counts, const std::int32_t* kept, const std::int32_t* table,
                    std::int64_t N, std::int64_t K, std::int64_t experts, std::int64_t I);
void invert_positions(std::int32_t* src, const std::int32_t* dest, std::int64_t n, std::int64_t M,
                      std::int64_t divisor);
void dispatch_slots(std::int32_t* expert, std::int32_t* assignment, const std::int32_t* kept, const std::int32_t* rows,
                    std::int64_t N, std::int64_t K, std::int64_t P, std::int64_t S, std::int64_t experts_per_rank);
void balance_loss_forward(double* total, double* f, const float* scores, const std::int32_t* index, std::int64_t B,
                          std::int64_t T, std::int64_t E, std::int64_t K, double coef);
void balance_loss_backward(float* dscores, const double* f, const float* scores, std::int64_t N, std::int64_t T,
                           std::int64_t E, double coef, double scale);
void router_z_loss_forward(double* total, float* lse, const float* logits, std::int64_t N, std::int64_t T,
                           std::int64_t E, double coef);
void router_z_loss_backward(float* dlogits, const float* logits, const float* lse, std::int64_t N, std::int64_t T,
                            std::int64_t E, double coef, double scale);

// router.cu: ops::router_forward / router_backward, one thread per token; n_groups at most
// kMaxRouterGroups (router_select.h; checked by the ops.h entry points). dscores may be null.
void router_forward(float* scores, std::int32_t* index, float* gate, const float* logits, const float* bias,
                    std::int64_t N, int E, int K, int n_groups, int topk_groups, bool sigmoid, bool normalize,
                    float scaling);
void router_backward(float* dlogits, const float* dgate, const float* scores, const std::int32_t* index,
                     const float* dscores, std::int64_t N, int E, int K, bool sigmoid, bool normalize, float scaling);

}  // namespace moe::cuda
