// The op API: every model computation is a forward/backward pair over Tensors.
//
// Contract (as in llm.c): backward ASSIGNS (=) activation gradients and ACCUMULATES (+=)
// parameter gradients, so several micro-batches can add into one parameter gradient.
// An activation-gradient output that is not defined() is skipped (e.g. dx of the first layer).
//
// Each function validates shapes, dtypes and device at the boundary (ShapeError naming the op
// and argument), then runs a check-free kernel. Real tensors are f32, or f64 for the test
// oracle; all real arguments of one call share a dtype. Index tensors are i32. Shapes are in
// comments: N = rows (tokens), C = model width, V = vocab, E = experts, D = head dim.
#pragma once
#include <cstdint>
#include <span>

#include "kernels/tensor.h"

namespace moe::ops {

// ---- GEMM (OpenBLAS) ------------------------------------------------------------------
// y (M,N) = x (M,K) @ w^T, w (N,K) in [out_features, in_features] order as stored on disk.
void matmul_forward(Tensor& y, const Tensor& x, const Tensor& w);
// dx (M,K) = dy @ w  (assign);  dw (N,K) += dy^T @ x  (accumulate). Either may be undefined
// and is then skipped (dx: nothing upstream; dw: a frozen weight), here and in every backward
// below that takes a weight gradient.
void matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w);

// Multiply-add FLOPs (2*M*N*K) of every GEMM the ops have run in this process since the last
// reset: linears, grouped expert GEMMs and the attention core's batched GEMMs. What the
// planner's training_flops_per_token counts, so the two are compared exactly.
std::int64_t gemm_flops();
void reset_gemm_flops();

// ---- Grouped GEMM (routed experts) -----------------------------------------------------
// Rows of x are grouped by expert: group g owns rows [offsets[g], offsets[g+1]), offsets has
// G+1 non-decreasing entries from 0 to M. y_g (M_g,N) = x_g (M_g,K) @ w[g]^T, w (G,N,K).
void grouped_matmul_forward(Tensor& y, const Tensor& x, const Tensor& w, std::span<const std::int64_t> offsets);
// dx_g = dy_g @ w[g] (assign); dw[g] += dy_g^T @ x_g (accumulate); either skipped when undefined.
void grouped_matmul_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w,
                             std::span<const std::int64_t> offsets);

// ---- Embedding --------------------------------------------------------------------------
// out (N,C) = table (V,C)[tokens (N)]. With `sharded` (a vocabulary-parallel rank's part of
// the table), a token -1 marks a row held by another rank: it reads zeros and gets no
// gradient; otherwise -1 is out of range like any other id.
void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table, bool sharded = false);
// dtable (V,C) += scatter of dout (N,C) by tokens.
void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens, bool sharded = false);

// ---- RMSNorm ----------------------------------------------------------------------------
// y (N,C) = x / sqrt(mean(x^2) + eps) * w (C); rstd (N) saved for backward.
void rmsnorm_forward(Tensor& y, Tensor& rstd, const Tensor& x, const Tensor& w, double eps);
// dx (assign), dw += (accumulate); either skipped when undefined.
void rmsnorm_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd);

// ---- RoPE (positions 0..T-1 per sequence; pair i turns by pos * theta^(-2i/D)) ------------
// half: "rotate half", dim i pairs with i + D/2, in place of x (Llama, our GQA).
// interleaved: dims 2i and 2i+1 pair, and y holds the pairs split into halves, pair i at
// (i, i + D/2): Hugging Face's DeepseekV3 (apply_rotary_pos_emb_interleave), whose queries
// and keys are both reordered so, which the attention scores do not see.
enum class RopePairs { half, interleaved };
// YaRN (Peng et al. 2023), as transformers' _compute_yarn_parameters: with factor > 1, pair i's
// frequency f_i = theta^(-2i/D) becomes f_i / factor where it turns less than beta_slow times
// in original_positions, stays where more than beta_fast, and is mixed linearly between (the
// range floored/ceiled); cos and sin are multiplied by attention_factor. factor 1: plain RoPE.
struct RopeScaling {
  double factor = 1, attention_factor = 1, beta_fast = 32, beta_slow = 1;
  std::int64_t original_positions = 4096;
};
// y (B,T,H,D) = rotate(x); y may alias x for half pairs only. positions (B*T) i32, where
// defined: each token's place in its document (document masking, data.document_mask), which
// it turns by instead of its place in the sequence (expect_positions says what is valid).
// first: the position of each sequence's first token (decoding after a KV cache of `first`
// tokens; 0 with positions).
void rope_forward(Tensor& y, const Tensor& x, double theta, RopePairs pairs = RopePairs::half,
                  const RopeScaling& scaling = {}, const Tensor& positions = Tensor(), std::int64_t first = 0);
// dx = the transpose of forward's map applied to dy (rotation by the negative angle, then
// the pairs put back where forward took them); dx may alias dy for half pairs only.
void rope_backward(Tensor& dx, const Tensor& dy, double theta, RopePairs pairs = RopePairs::half,
                   const RopeScaling& scaling = {}, const Tensor& positions = Tensor(), std::int64_t first = 0);

// ---- Columns --------------------------------------------------------------------------
// out[r, out_col + j] = in[r / rep, in_col + j] for j < width and every row r of out (R,Co),
// in (R/rep, Ci): a block of columns copied between row-aligned matrices, each row of in
// repeated rep times (a key part every head shares); out's other columns are left alone.
// Any dtype. (MLA's split and joined per-head parts.)
void copy_columns(Tensor& out, std::int64_t out_col, const Tensor& in, std::int64_t in_col, std::int64_t width,
                  std::int64_t rep = 1);

// ---- Causal attention with GQA ----------------------------------------------------------
// out (B,T,H,D) = softmax(q k^T / sqrt(D) + causal mask) v, with q (B,T,H,D), k and v
// (B,T,Hkv,D), H a multiple of Hkv (query head h reads kv head h / (H/Hkv)).
// probs (B,H,T,T) saves the softmax for backward (zero above the diagonal). Document
// masking: with positions (B*T) i32 defined (as rope_forward's), query i also sees no key
// before its document's first token, i - positions[i]; probs are zero there too, so backward
// needs no positions.
void attention_forward(Tensor& out, Tensor& probs, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& positions = Tensor());
// dq, dk, dv (assign).
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& probs);

// The fused form (FlashAttention, cuDNN's SDPA): forward keeps the softmax's log-sum-exp per
// row, lse (B,H,T) (of the scaled, masked scores), instead of the probabilities, and backward
// recomputes them from q, k and lse; the same out, dq, dk, dv as above. The CPU runs the
// probabilities form on a scratch buffer. GPU tensors take cuDNN's fused SDPA where
// fused_attention_on_gpu(): q, k, v, out and dout in BF16 (rounded here), statistics and
// accumulation in FP32; `out` must be forward's (backward reads it). positions as
// attention_forward's; cuDNN's fused kernel takes none (a GPU caller with document masking
// uses attention_forward).
void attention_lse_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& positions = Tensor());
void attention_lse_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                            const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& positions = Tensor());
// Whether this build has cuDNN's fused attention for GPU tensors (MOE_WITH_CUDNN).
bool fused_attention_on_gpu();

// Decoding with a KV cache (inference, no backward): out (B,N,H,D) of the queries q (B,N,H,D)
// of positions S-N .. S-1 over the keys and values k, v (B,S,Hkv,D) of positions 0 .. S-1
// (the cache, the N new ones last); query i sees keys 0 .. S-N+i. The CPU's for now.
void attention_cached_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v);

// ---- SwiGLU core (the projections around it are matmuls) --------------------------------
// h (N,F) = silu(gate) * up.
void swiglu_forward(Tensor& h, const Tensor& gate, const Tensor& up);
// dgate, dup (assign).
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dh, const Tensor& gate, const Tensor& up);

// ---- Router: scores, biased top-k with group limits, gate weights -----------------------
enum class RouterKind { sigmoid, softmax };
struct RouterSpec {
  RouterKind kind = RouterKind::sigmoid;
  int top_k = 1;
  int n_groups = 1;       // experts split into n_groups equal groups...
  int topk_groups = 1;    // ...of which a token may use at most topk_groups
  bool normalize = true;  // gates divided by the sum of the chosen scores
  double scaling = 1.0;   // routed_scaling_factor, applied to the gates
};
// scores (N,E) = sigmoid(logits) or softmax(logits); index (N,k) i32 = top-k of scores + bias
// (E) inside the best groups (group score = sum of its top-2 biased scores; ties -> lower
// index); gate (N,k) from the unbiased scores. The bias only steers selection.
void router_forward(Tensor& scores, Tensor& index, Tensor& gate, const Tensor& logits, const Tensor& bias,
                    const RouterSpec& spec);
// dlogits (N,E) (assign) from dgate (N,k), plus dscores (N,E) when defined (a loss on the
// scores themselves, e.g. the balance loss); selection is piecewise constant, so no gradient
// flows through the choice itself.
void router_backward(Tensor& dlogits, const Tensor& dgate, const Tensor& scores, const Tensor& index,
                     const RouterSpec& spec, const Tensor& dscores = Tensor());

// ---- Row movement (expert dispatch and combine) -------------------------------------------
// Index tensors are i32 on the data's device (the dispatch plan below makes them there);
// -1 means "none". Sums run in a fixed order on every device (no atomics), so a combine gives
// the same bits every run and on every device. Index values are checked where the host may
// read them (cpu, sim); on a GPU they are the plan ops' own output.
// out (R,C) = in (N,C)[src]: out[r] = in[src[r]], a zero row where src[r] = -1; src (R) in
// [-1,N). Any dtype (rows of bytes).
void gather_rows(Tensor& out, const Tensor& in, const Tensor& src);
// Fixed-width weighted row sums: out (M,C) row m sums the terms of the slots[m,w] >= 0 in w
// order, term = weights[m,w] * in[slots[m,w]] (weights (M,W) like slots; undefined: term =
// in[slots[m,w]]). out = ((term_0 + term_1) + ...), a row without terms 0; with accumulate,
// out = ((out + term_0) + term_1) + ..., a row without terms unchanged. slots (M,W) in [-1,N).
void combine_rows(Tensor& out, const Tensor& in, const Tensor& slots, const Tensor& weights = Tensor(),
                  bool accumulate = false);
// out (J) = sum over c of a[a_rows[j], c] * b[b_rows[j], c], in double, rounded once (b_rows
// undefined: row j of b): the gate gradient of each expert output a token received.
void row_dot(Tensor& out, const Tensor& a, const Tensor& a_rows, const Tensor& b, const Tensor& b_rows = Tensor());

// ---- Dispatch plan (the MoE's routing lists, made on the choices' device) ---------------
// i32 tensors, -1 = none. The caller reads only counts back (model/dispatch.h).
// Capacity: assignment a = n*K + k of index (N,K) keeps its expert if fewer than `capacity`
// earlier assignments (of all N tokens, in order) chose that expert; capacity < 0: no limit.
// kept (N,K) = index where kept and n in [n0, n1) (this tensor-parallel rank's tokens), else
// -1. counts (2,E): row 0 the assignments of tokens [n0, n1) per expert (the load, before
// drops), row 1 those kept.
void route_capacity(Tensor& kept, Tensor& counts, const Tensor& index, std::int64_t capacity, std::int64_t n0,
                    std::int64_t n1);
// pairs (N,P): pairs[n,j] = j if token n keeps an expert e with e / experts_per_rank == j,
// else -1. fan_out (1): the most ranks one token reaches, at least 1.
void route_pairs(Tensor& pairs, Tensor& fan_out, const Tensor& kept, std::int64_t experts_per_rank);
// Redundant experts: each kept assignment of kept (N,K) (expert ids in [0, experts), -1 none)
// to one instance of its expert. table (experts + 1 + L): offsets into the instance list that
// follows (expert e's instances are table[experts + 1 + table[e] ..  experts + 1 + table[e+1])),
// then the list; token n takes instance n mod (the expert's instances). instances (N,K) = the
// instance ids (-1 none); counts (I) the assignments per instance (assign).
void pick_instances(Tensor& instances, Tensor& counts, const Tensor& kept, const Tensor& table, std::int64_t experts);
// Stable counting sort: element i of keys (n) with keys[i] >= 0 falls in bin keys[i] /
// divisor (< bins); dest (n) = its place in bin-major order, a bin's elements in index order;
// -1 where keys[i] < 0. counts (bins), when defined, the elements per bin. dest is not keys.
void counting_sort(Tensor& dest, Tensor& counts, const Tensor& keys, std::int64_t bins, std::int64_t divisor = 1);
// The inverse of a placement: src (M) = -1, then src[dest[i]] = i / divisor for every dest[i]
// >= 0 (dest (n) in [-1, M), no place twice).
void invert_positions(Tensor& src, const Tensor& dest, std::int64_t divisor = 1);
// The routing metadata of the rows sent: for each kept assignment a = n*K+k, with expert e on
// rank j = e / experts_per_rank and sent as row r = rows[n,j]: expert (S,K)[r,k] = e - j *
// experts_per_rank (the local expert there) and assignment (S*K)[r*K+k] = a; -1 elsewhere.
void dispatch_slots(Tensor& expert, Tensor& assignment, const Tensor& kept, const Tensor& rows,
                    std::int64_t experts_per_rank);
// Sequence-wise balance loss (../shared/DESIGN.md) of B = N/T sequences: per sequence, f_e =
// E/(K T) * #choices of e in index (N,K), P_e = mean over its tokens of the scores (N,E)
// normalised over all experts; total (1) f64 += coef * sum_e f_e P_e, sequences in order.
// f (B,E) f64 is written for the backward. All in double, in index order.
void balance_loss_forward(Tensor& total, Tensor& f, const Tensor& scores, const Tensor& index, std::int64_t T,
                          double coef);
// dscores (N,E) (assign) = scale * dloss/dscores: coef * f_e / T per token through s' = s / sum(s).
void balance_loss_backward(Tensor& dscores, const Tensor& f, const Tensor& scores, std::int64_t T, double coef,
                           double scale);
// Router z-loss (ST-MoE, as Megatron-Core's): lse (N) f32 = log sum_e exp(logits (N,E)); total
// (1) f64 += coef / T * sum_n lse_n^2 (per sequence of T, the mean over its tokens; summed over
// the sequences like the balance loss), in double, in token order.
void router_z_loss_forward(Tensor& total, Tensor& lse, const Tensor& logits, std::int64_t T, double coef);
// dlogits (N,E) += scale * 2 coef / T * lse_n * softmax(logits_n).
void router_z_loss_backward(Tensor& dlogits, const Tensor& logits, const Tensor& lse, std::int64_t T, double coef,
                            double scale);

// ---- Cross-entropy ----------------------------------------------------------------------
// losses (N) = -log softmax(logits (N,V))[target]; targets (N) i32, -1 = ignored (loss 0).
void cross_entropy_forward(Tensor& losses, const Tensor& logits, const Tensor& targets);
// dlogits (N,V) = (softmax - onehot) * dlosses[n] (assign); ignored rows get 0.
void cross_entropy_backward(Tensor& dlogits, const Tensor& dlosses, const Tensor& logits, const Tensor& targets);

// ---- Elementwise helpers (residual adds, gradient sums, scaling) --------------------------
// y += alpha * x, same shape and dtype.
void accumulate(Tensor& y, const Tensor& x, double alpha = 1.0);
// y *= alpha.
void scale(Tensor& y, double alpha);
// sum(x * x) in double (gradient norms). On a device the result is a copy back to the host
// (counted, kernels/residency.h).
double sum_squares(const Tensor& x);
// total (1) f64 += x[0] + x[1] + ... (x f32, any shape) in double, one running sum in index
// order, on x's device: a loss summed where it is made, read once per step.
void sum_into(Tensor& total, const Tensor& x);
// y = x in y's dtype, same shape: f32 -> bf16 rounds to nearest even; bf16 -> f32 is exact.
void convert(Tensor& y, const Tensor& x);

// ---- FP8 with fine-grained scaling (DeepSeek-V3; formats in kernels/fp8.h) ----------------
// Activations: per 1x128 tile along K of x (M,K) f32: scales (M, ceil(K/128)) = amax/448 per
// tile (the power of two at or above it when pow2; 1 for a tile of zeros or FP32 denormals),
// q (M,K) e4m3 = RNE(x / scale), saturated. The last tile of a row may be shorter.
void quantize_1x128(Tensor& q, Tensor& scales, const Tensor& x, bool pow2 = false);
// Weights: per 128x128 block of w (N,K): scales (ceil(N/128), ceil(K/128)).
void quantize_128x128(Tensor& q, Tensor& scales, const Tensor& w, bool pow2 = false);
// y (M,N) f32 = a (M,K) b^T with a per 1x128 tile (sa (M, ceil(K/128))) and b per 128x128
// block (sb (ceil(N/128), ceil(K/128))) or per 1x128 tile (sb (N, ceil(K/128))). The
// definition, bit for bit (the CUDA kernel's reference): for each 128-wide chunk t of K in
// order, p = float(exact sum of the chunk's products), acc = acc + (p * sa[m,t]) * sb[.,t]
// in FP32, acc starting at 0: promotion to FP32 every 128 elements, as DeepGEMM does.
void fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb);
// The fast GPU path of fp8_gemm (cuBLASLt block scaling; device tensors, b per 128x128 block
// or per 1x128 tile): the same operands and result up to FP32 accumulation order (where
// cuBLASLt has no kernel for the pairing or shape: fp8_gemm's GPU reference). DeviceError on
// the CPU.
void sm90_fp8_gemm(Tensor& y, const Tensor& qa, const Tensor& sa, const Tensor& qb, const Tensor& sb);
// sm90_fp8_gemm calls that ran the reference kernel because cuBLASLt refused even the
// zero-padded shape, since the process started: 0 for the model's own shapes (the gpu tests
// and benchmarks print it).
std::int64_t fp8_reference_fallbacks();
// y (M,N) f32 = op(a) op(b) (+ y with accumulate) with a, b bf16 device tensors, op a
// transpose where ta / tb (cuBLASLt, FP32 accumulation). The default is a linear's forward,
// y = a b^T with a (M,K), b (N,K); its backward is dx = dy w (tb false) and dw += dy^T x (ta,
// not tb, accumulate).
void bf16_gemm(Tensor& y, const Tensor& a, const Tensor& b, bool ta = false, bool tb = true, bool accumulate = false);
// A linear layer in FP8 (DeepSeek-V3's recipe) from the pieces above: y (M,N) = x (M,K) w^T
// with x already quantised per 1x128 tile (qx (M,K) e4m3, sx (M, ceil(K/128)), from
// quantize_1x128: what backward keeps of x, a quarter of its FP32 bytes plus the scales) and
// w (N,K) f32 quantised here per 128x128 block.
// path: which GEMM multiplies: the bit-exact definition (fp8_gemm) or the fast cuBLASLt
// kernel on GPU tensors (sm90_fp8_gemm; equal up to FP32 accumulation order; for dw, whose
// operands are both per 1x128 tile, where this cuBLASLt has a kernel for that).
enum class Fp8Path { reference, sm90 };
void fp8_linear_forward(Tensor& y, const Tensor& qx, const Tensor& sx, const Tensor& w,
                        Fp8Path path = Fp8Path::reference);
// dx (M,K) = dy w (assign): dy per 1x128 tile along N, w^T per 128x128 block. dw (N,K) +=
// dy^T x (accumulate): both per 1x128 tile along M, x dequantised from qx and quantised again
// along M (the 1x128 -> 128x1 conversion of the DeepSeek-V3 report). segments: row offsets
// from 0 to M where the tiles along M start afresh, each segment its own FP32 GEMM added in
// order (an expert's rows from different source micro-batches); empty: one segment. dx or dw
// undefined: skipped.
void fp8_linear_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const Tensor& qx, const Tensor& sx, const Tensor& w,
                         std::span<const std::int64_t> segments = {}, Fp8Path path = Fp8Path::reference);

// ---- AdamW (decoupled weight decay, as torch.optim.AdamW) --------------------------------
struct AdamWSpec {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.0;
  std::int64_t step = 1;  // 1-based count of updates including this one (bias correction)
};
// param *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// param -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). All f32, same shape.
void adamw_step(Tensor& param, Tensor& m, Tensor& v, const Tensor& grad, const AdamWSpec& spec);

}  // namespace moe::ops
