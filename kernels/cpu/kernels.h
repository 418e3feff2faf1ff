// The CPU kernels behind the op API (internal to kernels/): the reference every other
// backend is held to. kernels/ops/ validates every argument first (shapes, dtypes, devices,
// index values), so nothing here checks; sizes are read from the tensors' shapes. The real
// kernels run in f32 and f64 (cpu/common.h: dispatch_real). Contracts are ops.h's.
#pragma once
#include <cstdint>

#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace moe::cpu {

// adamw.cpp: the AdamW update over n floats, spec already in f32 (decay = 1 - lr*wd, bias
// corrections bc1, bc2), as the CUDA kernel takes it.
void adamw_step(float* p, float* m, float* v, const float* g, std::int64_t n, float lr, float beta1, float beta2,
                float eps, float decay, float bc1, float bc2);

// elementwise.cpp
void accumulate(Tensor& y, const Tensor& x, double alpha);
void scale(Tensor& y, double alpha);
void sum_into(Tensor& total, const Tensor& x);
double sum_squares(const Tensor& x);
void convert_bf16(Tensor& y, const Tensor& x);  // f32 -> bf16 or bf16 -> f32, by the dtypes

// embedding.cpp, cross_entropy.cpp, rmsnorm.cpp, swiglu.cpp
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table);
void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens);
void cross_entropy_forward(Tensor& losses, const Tensor& logits, const Tensor& targets);
void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& targets);
void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, double eps);
void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd);
void swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up);
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up);

// rope.cpp: y (B,T,H,D) = x with each pair rotated by the angle tables cos, sin (T, D/2).
// layout 0: pairs (i, i+D/2) in and out (y may alias x); 1: pairs (2i, 2i+1) in, (i, i+D/2)
// out; 2: the reverse. Token (b, t) turns by table row positions[b*T + t] where positions
// (B*T) i32 is defined (its place in its document), else by row t.
void rope(Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, int layout, const Tensor& positions);

// columns.cpp: ops::copy_columns.
void copy_columns(Tensor& out, std::int64_t out_col, const Tensor& in, std::int64_t in_col, std::int64_t width,
                  std::int64_t rep);

// router.cpp
void router_forward(Tensor& scores, Tensor& index, Tensor& gate, const Tensor& logits, const Tensor& bias,
                    const ops::RouterSpec& spec);
void router_backward(Tensor& dlogits, const Tensor& dgate, const Tensor& scores, const Tensor& index,
                     const ops::RouterSpec& spec, const Tensor& dscores);

// rows.cpp
void gather_rows(Tensor& out, const Tensor& in, const Tensor& src);
void combine_rows(Tensor& out, const Tensor& in, const Tensor& slots, const Tensor& weights, bool accumulate);
void row_dot(Tensor& out, const Tensor& a, const Tensor& a_rows, const Tensor& b, const Tensor& b_rows);

// routing.cpp
void route_capacity(Tensor& kept, Tensor& counts, const Tensor& index, std::int64_t capacity, std::int64_t n0,
                    std::int64_t n1);
void route_pairs(Tensor& pairs, Tensor& fan_out, const Tensor& kept, std::int64_t experts_per_rank);
void pick_instances(Tensor& instances, Tensor& counts, const Tensor& kept, const Tensor& table, std::int64_t experts);
void counting_sort(Tensor& dest, Tensor& counts, const Tensor& keys, std::int64_t bins, std::int64_t divisor);
void invert_positions(Tensor& src, const Tensor& dest, std::int64_t divisor);
void dispatch_slots(Tensor& expert, Tensor& assignment, const Tensor& kept, const Tensor& rows,
                    std::int64_t experts_per_rank);
void balance_loss_forward(Tensor& total, Tensor& f, const Tensor& scores, const Tensor& index, std::int64_t T,
                          double coef);
void balance_loss_backward(Tensor& dscores, const Tensor& f, const Tensor& scores, std::int64_t T, double coef,
                           double scale);
void router_z_loss_forward(Tensor& total, Tensor& lse, const Tensor& logits, std::int64_t T, double coef);
void router_z_loss_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, std::int64_t T, double coef,
                            double scale);

// fp8.cpp: quantisation with one scale per block of `rows` x 128 (rows 1: activation tiles;
// 128: weight blocks); the scaled GEMM's definition (b_rows: sb per 1x128 tile of b, else per
// 128x128 block); and the helpers of the FP8 linear layer's backward.
void quantize(Tensor& q, Tensor& scales, const Tensor& x, std::int64_t rows, bool pow2);
void fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb, bool b_rows);
void transpose(Tensor& y, const Tensor& x);                               // (C,R) = (R,C)^T, f32
void dequantize_1x128(Tensor& x, const Tensor& q, const Tensor& scales);  // f32 = codes x their tile's scale

// attention.cpp: causal GQA attention materialising the probabilities, also writing each
// row's log-sum-exp where lse is defined; its backward (dk, dv accumulate: zeroed by the
// caller); and the probabilities rebuilt from q, k and lse (the fused form's backward).
// positions (B*T) i32, where defined: query i of a sequence sees keys i - positions[i] .. i
// only (its document); undefined: keys 0 .. i.
void attention_forward(Tensor& out, Tensor& probs, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& positions);
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& probs);
void recompute_probs(Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& lse, const Tensor& positions);
// Decoding: the N queries of positions S-N.. over S cached keys (ops::attention_cached_forward).
void attention_cached(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v);

}  // namespace moe::cpu
