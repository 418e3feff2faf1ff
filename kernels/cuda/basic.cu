// The CUDA versions of the elementwise and row-wise ops (kernels/ops.h has the contracts; the
// CPU files are the references): AdamW, RMSNorm, embedding, RoPE, SwiGLU backward,
// cross-entropy, the elementwise helpers and BF16 conversion. f32 only. Sums a
// CPU op runs in a fixed order run here in a fixed order too (one thread per column over the
// rows for dw and the embedding's gradient), so results do not vary between runs; row
// reductions go through a block and differ from the CPU's order within FP32 rounding.
#include <cuda_bf16.h>

#include <cfloat>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"

namespace moe::cuda {
namespace {
constexpr int kThreads = 256;
unsigned blocks_for(std::int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Sum (or max) over the block's threads; every thread gets the result.
template <bool Max>
__device__ float block_reduce(float v) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) {
    const float other = __shfl_xor_sync(0xffffffffu, v, o);
    v = Max ? fmaxf(v, other) : v + other;
  }
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  v = threadIdx.x < (blockDim.x + 31) / 32 ? part[threadIdx.x] : (Max ? -FLT_MAX : 0.f);
  if (threadIdx.x < 32)
    for (int o = 16; o > 0; o >>= 1) {
      const float other = __shfl_xor_sync(0xffffffffu, v, o);
      v = Max ? fmaxf(v, other) : v + other;
    }
  if (threadIdx.x == 0) part[0] = v;
  __syncthreads();
  v = part[0];
  __syncthreads();  // part is reused by the next reduction
  return v;
}

__global__ void adamw_kernel(float* p, float* m, float* v, const float* g, std::int64_t n, float lr, float b1, float b2,
                             float eps, float decay, float bc1, float bc2) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  m[i] = b1 * m[i] + (1.0f - b1) * g[i];
  v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
  p[i] = p[i] * decay - lr * (m[i] / bc1) / (sqrtf(v[i] / bc2) + eps);
}

__global__ void rmsnorm_forward_kernel(float* y, float* rstd, const float* x, const float* w, std::int64_t C,
                                       float eps) {
  const std::int64_t n = blockIdx.x;
  const float* xr = x + n * C;
  float ss = 0;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
  const float r = 1.0f / sqrtf(block_reduce<false>(ss) / float(C) + eps);
  if (threadIdx.x == 0) rstd[n] = r;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) y[n * C + c] = xr[c] * r * w[c];
}

__global__ void rmsnorm_dx_kernel(float* dx, const float* dy, const float* x, const float* w, const float* rstd,
                                  std::int64_t C) {
  const std::int64_t n = blockIdx.x;
  const float *xr = x + n * C, *dyr = dy + n * C;
  const float r = rstd[n];
  float dot = 0;
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) dot += dyr[c] * w[c] * xr[c] * r;
  dot = block_reduce<false>(dot) / float(C);
  for (std::int64_t c = threadIdx.x; c < C; c += blockDim.x) dx[n * C + c] = r * (dyr[c] * w[c] - xr[c] * r * dot);
}

// dw[c] += sum over rows in order of dy * x * rstd (one thread per column: a fixed order).
__global__ void rmsnorm_dw_kernel(float* dw, const float* dy, const float* x, const float* rstd, std::int64_t N,
                                  std::int64_t C) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  float acc = dw[c];
  for (std::int64_t n = 0; n < N; ++n) acc += dy[n * C + c] * x[n * C + c] * rstd[n];
  dw[c] = acc;
}

__global__ void embedding_forward_kernel(float* out, const std::int32_t* tok, const float* table, std::int64_t N,
                                         std::int64_t C) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= N * C) return;
  const std::int32_t t = tok[i / C];
  out[i] = t < 0 ? 0.f : table[std::int64_t(t) * C + i % C];
}

__global__ void embedding_backward_kernel(float* dtable, const std::int32_t* tok, const float* dout, std::int64_t N,
                                          std::int64_t C) {
  const std::int64_t c = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  for (std::int64_t n = 0; n < N; ++n)
    if (tok[n] >= 0) dtable[std::int64_t(tok[n]) * C + c] += dout[n * C + c];
}

// Per row: lse = max + log(sum exp(l - max)); losses = lse - l[target] (0 when ignored);
// with dlogits, (softmax - onehot) * dlosses instead.
__global__ void cross_entropy_kernel(float* losses, float* dlogits, const float* dlosses, const float* logits,
                                     const std::int32_t* targets, std::int64_t V) {
  const std::int64_t n = blockIdx.x;
  const float* l = logits + n * V;
  const std::int32_t t = targets[n];
  float mx = -FLT_MAX;
  for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, l[v]);
  mx = block_reduce<true>(mx);
  float sum = 0;
  for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(l[v] - mx);
  const float lse = mx + logf(block_reduce<false>(sum));
  if (losses && threadIdx.x == 0) losses[n] = t < 0 ? 0.f : lse - l[t];
  if (!dlogits) return;
  float* d = dlogits + n * V;
  const float s = dlosses[n];
  for (std::int64_t v = threadIdx.x; v < V; v += blockDim.x)
    d[v] = t < 0 ? 0.f : expf(l[v] - lse) * s - (v == t ? s : 0.f);
}
// y (C,R) = x (R,C)^T through 32x32 tiles in shared memory (coalesced on both sides).
__global__ void transpose_kernel(float* y, const float* x, std::int64_t R, std::int64_t C) {
  __shared__ float tile[32][33];
  const std::int64_t r0 = blockIdx.y * 32, c0 = blockIdx.x * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y)
    if (r0 + i < R && c0 + threadIdx.x < C) tile[i][threadIdx.x] = x[(r0 + i) * C + c0 + threadIdx.x];
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y)
    if (c0 + i < C && r0 + threadIdx.x < R) y[(c0 + i) * R + r0 + threadIdx.x] = tile[threadIdx.x][i];
}
// Attention's masked softmax, one block per row of a (T,T) block of scores: row i keeps
// columns 0..i, scaled, and zeroes the rest (the CPU's probs layout).
// With document positions (B*T), the row's sequence b = row / (heads T) keeps columns from
// its document's first token, i - positions[b T + i], on.
__global__ void causal_softmax_kernel(float* P, std::int64_t T, float scale, const std::int32_t* positions,
                                      std::int64_t heads) {
  const std::int64_t row = blockIdx.x, i = row % T;
  const std::int64_t j0 = positions ? i - positions[row / (heads * T) * T + i] : 0;
  float* p = P + row * T;
  float mx = -FLT_MAX;
  for (std::int64_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, p[j] *= scale);
  mx = block_reduce<true>(mx);
  float sum = 0;
  for (std::int64_t j = j0 + threadIdx.x; j <= i; j += blockDim.x) sum += (p[j] = expf(p[j] - mx));
  const float inv = 1.0f / block_reduce<false>(sum);
  for (std::int64_t j = threadIdx.x; j < T; j += blockDim.x) p[j] = j >= j0 && j <= i ? p[j] * inv : 0.f;
}
// Its backward in place: dS = P (dP - sum_j P dP) * scale on the kept columns, 0 above.
__global__ void causal_softmax_backward_kernel(float* dS, const float* P, std::int64_t T, float scale) {
  const std::int64_t row = blockIdx.x, i = row % T;
  const float* p = P + row * T;
  float* r = dS + row * T;
  float dot = 0;
  for (std::int64_t j = threadIdx.x; j <= i; j += blockDim.x) dot += p[j] * r[j];
  dot = block_reduce<false>(dot);
  for (std::int64_t j = threadIdx.x; j < T; j += blockDim.x) r[j] = j <= i ? p[j] * (r[j] - dot) * scale : 0.f;
}
// Each (i, i + D/2) pair of every head rotated by the angle table of its position.
// With positions (B*T), token (b, t) reads table row positions[b T + t] (its place in its document).
__global__ void rope_kernel(float* y, const float* x, const float* cs, const float* sn, const std::int32_t* positions,
                            std::int64_t rows, std::int64_t T, std::int64_t H, std::int64_t half, int layout) {
  const std::int64_t k = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;  // (row, pair)
  if (k >= rows * half) return;
  const std::int64_t row = k / half, i = k % half, token = row / H, base = row * 2 * half;
  const std::int64_t p = positions ? positions[token] : token % T;
  // Where pair i's two dims are read and written: (i, i + half), or (2i, 2i + 1).
  const std::int64_t r1 = layout == 1 ? 2 * i : i, r2 = layout == 1 ? 2 * i + 1 : i + half;
  const std::int64_t w1 = layout == 2 ? 2 * i : i, w2 = layout == 2 ? 2 * i + 1 : i + half;
  const float c = cs[p * half + i], s = sn[p * half + i], x1 = x[base + r1], x2 = x[base + r2];
  y[base + w1] = x1 * c - x2 * s;
  y[base + w2] = x2 * c + x1 * s;
}

__global__ void copy_columns_kernel(char* out, std::size_t out_stride, const char* in, std::size_t in_stride,
                                    std::size_t bytes, std::int64_t rows, std::int64_t rep) {
  const std::int64_t k = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;  // (row, byte)
  if (k >= rows * static_cast<std::int64_t>(bytes)) return;
  const std::int64_t r = k / static_cast<std::int64_t>(bytes), b = k % static_cast<std::int64_t>(bytes);
  out[std::size_t(r) * out_stride + std::size_t(b)] = in[std::size_t(r / rep) * in_stride + std::size_t(b)];
}

__global__ void swiglu_backward_kernel(float* dg, float* du, const float* d, const float* g, const float* u,
                                       std::int64_t n) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float sig = 1.0f / (1.0f + expf(-g[i]));
  du[i] = d[i] * g[i] * sig;
  dg[i] = d[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
}
__global__ void accumulate_kernel(float* y, const float* x, float a, std::int64_t n) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += a * x[i];
}
__global__ void scale_kernel(float* y, float a, std::int64_t n) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] *= a;
}
// Per block: the sum of x^2 over its grid-stride share, in double; the host adds the blocks.
__global__ void sum_squares_kernel(double* part, const float* x, std::int64_t n) {
  __shared__ double s[kThreads];
  double acc = 0;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    acc += double(x[i]) * double(x[i]);
  s[threadIdx.x] = acc;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = s[0];
}
// One thread in index order: a loss of a few thousand rows, summed exactly as the CPU does.
__global__ void sum_into_kernel(double* total, const float* x, std::int64_t n) {
  double s = *total;
  for (std::int64_t i = 0; i < n; ++i) s += double(x[i]);
  *total = s;
}
__global__ void to_bf16_kernel(__nv_bfloat16* y, const float* x, std::int64_t n) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16_rn(x[i]);
}
__global__ void from_bf16_kernel(float* y, const __nv_bfloat16* x, std::int64_t n) {
  const std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] = __bfloat162float(x[i]);
}
}  // namespace

void accumulate(float* y, const float* x, float alpha, std::int64_t n) {
  if (n == 0) return;
  accumulate_kernel<<<blocks_for(n), kThreads>>>(y, x, alpha, n);
  launched();
}

void scale(float* y, float alpha, std::int64_t n) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n), kThreads>>>(y, alpha, n);
  launched();
}

void sum_into(double* total, const float* x, std::int64_t n) {
  sum_into_kernel<<<1, 1>>>(total, x, n);
  launched();
}

double sum_squares(const float* x, std::int64_t n) {
  if (n == 0) return 0;
  constexpr int kBlocks = 256;  // a fixed grid: the same partial sums every run
  const Scratch<double> part(kBlocks);
  double host[kBlocks];
  sum_squares_kernel<<<kBlocks, kThreads>>>(part.p, x, n);
  launched();
  MOE_CUDA_CHECK(cudaMemcpy(host, part.p, sizeof host, cudaMemcpyDeviceToHost));  // waits for the kernel
  double sum = 0;
  for (double p : host) sum += p;
  return sum;
}

void convert_bf16(void* y, const void* x, std::int64_t n, bool to_bf16) {
  if (n == 0) return;
  if (to_bf16)
    to_bf16_kernel<<<blocks_for(n), kThreads>>>(static_cast<__nv_bfloat16*>(y), static_cast<const float*>(x), n);
  else from_bf16_kernel<<<blocks_for(n), kThreads>>>(static_cast<float*>(y), static_cast<const __nv_bfloat16*>(x), n);
  launched();
}

void rope(float* y, const float* x, const float* cs, const float* sn, const std::int32_t* positions, std::int64_t B,
          std::int64_t T, std::int64_t H, std::int64_t D, int layout) {
  const std::int64_t n = B * T * H * (D / 2);
  if (n == 0) return;
  rope_kernel<<<blocks_for(n), kThreads>>>(y, x, cs, sn, positions, B * T * H, T, H, D / 2, layout);
  launched();
}

void copy_columns(void* out, std::size_t out_stride, std::size_t out_off, const void* in, std::size_t in_stride,
                  std::size_t in_off, std::size_t bytes, std::int64_t rows, std::int64_t rep) {
  const std::int64_t n = rows * static_cast<std::int64_t>(bytes);
  if (n == 0) return;
  copy_columns_kernel<<<blocks_for(n), kThreads>>>(static_cast<char*>(out) + out_off, out_stride,
                                                   static_cast<const char*>(in) + in_off, in_stride, bytes, rows, rep);
  launched();
}

void swiglu_backward(float* dgate, float* dup, const float* dh, const float* gate, const float* up, std::int64_t n) {
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads>>>(dgate, dup, dh, gate, up, n);
  launched();
}

void adamw_step(float* p, float* m, float* v, const float* g, std::int64_t n, float lr, float beta1, float beta2,
                float eps, float decay, float bc1, float bc2) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n), kThreads>>>(p, m, v, g, n, lr, beta1, beta2, eps, decay, bc1, bc2);
  launched();
}

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, std::int64_t N, std::int64_t C, float eps) {
  if (N == 0) return;
  rmsnorm_forward_kernel<<<static_cast<unsigned>(N), kThreads>>>(y, rstd, x, w, C, eps);
  launched();
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      std::int64_t N, std::int64_t C) {
  if (N == 0) return;
  if (dw) rmsnorm_dw_kernel<<<blocks_for(C), kThreads>>>(dw, dy, x, rstd, N, C);
  if (dx) rmsnorm_dx_kernel<<<static_cast<unsigned>(N), kThreads>>>(dx, dy, x, w, rstd, C);
  launched();
}

void embedding_forward(float* out, const std::int32_t* tokens, const float* table, std::int64_t N, std::int64_t C) {
  if (N * C == 0) return;
  embedding_forward_kernel<<<blocks_for(N * C), kThreads>>>(out, tokens, table, N, C);
  launched();
}

void embedding_backward(float* dtable, const float* dout, const std::int32_t* tokens, std::int64_t N, std::int64_t C) {
  if (N * C == 0) return;
  embedding_backward_kernel<<<blocks_for(C), kThreads>>>(dtable, tokens, dout, N, C);
  launched();
}

void cross_entropy(float* losses, float* dlogits, const float* dlosses, const float* logits,
                   const std::int32_t* targets, std::int64_t N, std::int64_t V) {
  if (N == 0) return;
  cross_entropy_kernel<<<static_cast<unsigned>(N), kThreads>>>(losses, dlogits, dlosses, logits, targets, V);
  launched();
}

void causal_softmax(float* P, std::int64_t rows, std::int64_t T, float scale, const std::int32_t* positions,
                    std::int64_t heads) {
  if (rows == 0) return;
  causal_softmax_kernel<<<static_cast<unsigned>(rows), kThreads>>>(P, T, scale, positions, heads);
  launched();
}

void causal_softmax_backward(float* dS, const float* P, std::int64_t rows, std::int64_t T, float scale) {
  if (rows == 0) return;
  causal_softmax_backward_kernel<<<static_cast<unsigned>(rows), kThreads>>>(dS, P, T, scale);
  launched();
}

void transpose(float* y, const float* x, std::int64_t R, std::int64_t C) {
  if (R * C == 0) return;
  const dim3 grid(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>((R + 31) / 32)), block(32, 8);
  transpose_kernel<<<grid, block>>>(y, x, R, C);
  launched();
}

}  // namespace moe::cuda
