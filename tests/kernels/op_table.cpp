#include "tests/kernels/op_table.h"

#include <array>
#include <cmath>
#include <cstring>
#include <utility>

#include "kernels/ops.h"
#include "tests/support/testing.h"

namespace moe::testing {
namespace {

// Inputs and outputs of one run: random values from fixed seeds in the real dtype (f32 rows
// rounded from the same f64 draws), on the run's device.
struct Make {
  DType real;
  Device dev;
  Tensor rand(const Shape& s, std::uint64_t seed, double scale = 1) const {
    return random(s, seed, scale, real).to(dev);
  }
  Tensor f32(const Shape& s, std::uint64_t seed, double scale = 1) const {
    return random(s, seed, scale, DType::f32).to(dev);
  }
  Tensor empty(const Shape& s, DType t) const { return Tensor::empty(s, t, dev); }
  Tensor empty(const Shape& s) const { return empty(s, real); }
  Tensor zeros(const Shape& s) const { return Tensor::zeros(s, real, dev); }
  Tensor i32(const std::vector<std::int32_t>& v, const Shape& s) const { return ints(v, s).to(dev); }
  Tensor host(const Tensor& t) const { return t.to(Device::cpu); }
};
std::vector<Tensor> host(std::initializer_list<Tensor> ts) {
  std::vector<Tensor> out;
  for (const Tensor& t : ts) out.push_back(t.to(Device::cpu));
  return out;
}
Tensor scalar(double v) {
  Tensor t = Tensor::empty({1}, DType::f64);
  t.data<double>()[0] = v;
  return t;
}

// Values of every kind an FP8 tile meets: ordinary, an outlier, zeros, FP32 denormals.
Tensor awkward(const Shape& shape, std::uint64_t seed) {
  Tensor x = random(shape, seed, 3, DType::f32);
  float* d = x.data<float>();
  const std::int64_t n = x.numel();
  d[0] = 1e6f;
  for (std::int64_t i = 1; i < n && i < 300; ++i) d[i] = 0.f;  // a zero tile (with K <= 299)
  if (n > 400) d[n - 1] = 1e-40f, d[n - 2] = -3e-39f;          // denormals
  return x;
}

std::vector<OpCase> gemm_cases() {
  const std::int64_t M = 70, N = 48, K = 96;
  return {
      {.name = "matmul forward+backward (70,96) x (48,96)^T",
       .f32_tol = 1e-6,
       .gpu_tol = 1e-6,  // TF32 would be off by about 1e-3
       .flops = 6.0 * M * N * K,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const Tensor x = m.rand({M, K}, 20), w = m.rand({N, K}, 21, 0.2), dy = m.rand({M, N}, 22);
             Tensor y = m.empty({M, N}), dx = m.empty({M, K}), dw = m.rand({N, K}, 23, 0.1);
             ops::matmul_forward(y, x, w);
             ops::matmul_backward(dx, dw, dy, x, w);  // dw accumulates onto what is there
             return host({y, dx, dw});
           }},
      {.name = "grouped_matmul forward+backward, groups of 13, 0, 57 rows",
       .f32_tol = 1e-6,
       .gpu_tol = 1e-6,
       .flops = 6.0 * M * N * K,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const std::vector<std::int64_t> offsets = {0, 13, 13, 70};
             const Tensor x = m.rand({M, K}, 20), w = m.rand({3, N, K}, 21, 0.2), dy = m.rand({M, N}, 22);
             Tensor y = m.empty({M, N}), dx = m.empty({M, K}), dw = m.rand({3, N, K}, 23, 0.1);
             ops::grouped_matmul_forward(y, x, w, offsets);
             ops::grouped_matmul_backward(dx, dw, dy, x, w, offsets);
             return host({y, dx, dw});
           }},
  };
}

std::vector<OpCase> layer_cases() {
  const std::int64_t N = 37, C = 300, V = 1000;
  return {
      {.name = "embedding forward+backward (37 tokens, repeated and sharded out, of 1000 x 300)",
       .f32_tol = 1e-6,
       .gpu_tol = 0,  // the same adds in the same order
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             Tensor tok = random_ints({N}, 8, 0, int(V) - 1);
             tok.data<std::int32_t>()[3] = tok.data<std::int32_t>()[4];
             tok.data<std::int32_t>()[5] = -1;
             const Tensor tokens = tok.to(d), table = m.rand({V, C}, 9), dout = m.rand({N, C}, 10);
             Tensor out = m.empty({N, C}), dtable = m.zeros({V, C});
             ops::embedding_forward(out, tokens, table, true);
             ops::embedding_backward(dtable, dout, tokens, true);
             return host({out, dtable});
           }},
      {.name = "rmsnorm forward+backward (37,300)",
       .gpu_tol = 1e-5,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const Tensor x = m.rand({N, C}, 5, 2), w = m.rand({C}, 6), dy = m.rand({N, C}, 7);
             Tensor y = m.empty({N, C}), rstd = m.empty({N}), dx = m.empty({N, C}), dw = m.zeros({C});
             ops::rmsnorm_forward(y, rstd, x, w, 1e-6);
             ops::rmsnorm_backward(dx, dw, dy, x, w, rstd);
             return host({y, rstd, dx, dw});
           }},
      {.name = "rope forward+backward in place (2,9,3,16)",
       .f32_tol = 1e-6,
       .run =
           [](DType r, Device d) {
             const Make m{r, d};
             const Tensor x = m.rand({2, 9, 3, 16}, 14);
             Tensor y = m.empty(x.shape());
             ops::rope_forward(y, x, 10000.0);
             const Tensor forward = m.host(y);
             ops::rope_backward(y, y, 10000.0);  // aliased, as the attention layer calls it
             return std::vector<Tensor>{forward, m.host(y)};
           }},
      {.name = "rope interleaved pairs (HF DeepseekV3) forward+backward (2,9,3,16)",
       .f32_tol = 1e-6,
       .run =
           [](DType r, Device d) {
             const Make m{r, d};
             const Tensor x = m.rand({2, 9, 3, 16}, 14);
             Tensor y = m.empty(x.shape()), dx = m.empty(x.shape());
             ops::rope_forward(y, x, 10000.0, ops::RopePairs::interleaved);
             ops::rope_backward(dx, y, 10000.0, ops::RopePairs::interleaved);
             return host({y, dx});
           }},
      {.name = "copy_columns (74,40) <- (37,24) columns [3,19), rows repeated twice",
       .real = true,
       .gpu_tol = 0,
       .run =
           [](DType r, Device d) {
             const Make m{r, d};
             Tensor out = m.rand({74, 40}, 15);
             ops::copy_columns(out, 7, m.rand({37, 24}, 16), 3, 16, 2);
             return host({out});
           }},
      {.name = "swiglu forward+backward (37,300)",
       .f32_tol = 1e-6,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const Tensor g = m.rand({N, C}, 15, 4), u = m.rand({N, C}, 16), dh = m.rand({N, C}, 17);
             Tensor h = m.empty({N, C}), dg = m.empty({N, C}), du = m.empty({N, C});
             ops::swiglu_forward(h, g, u);
             ops::swiglu_backward(dg, du, dh, g, u);
             return host({h, dg, du});
           }},
      {.name = "cross_entropy forward+backward (37 rows of 1000, one ignored)",
       .gpu_tol = 1e-5,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             Tensor tg = random_ints({N}, 11, 0, int(V) - 1);
             tg.data<std::int32_t>()[2] = -1;
             const Tensor targets = tg.to(d), logits = m.rand({N, V}, 12, 3), dl = m.rand({N}, 13);
             Tensor loss = m.empty({N}), dlogits = m.empty({N, V});
             ops::cross_entropy_forward(loss, logits, targets);
             ops::cross_entropy_backward(dlogits, dl, logits, targets);
             return host({loss, dlogits});
           }},
      {.name = "adamw step (37,300) at step 7",
       .real = false,
       .run =
           [=](DType, Device d) {
             const Make m{DType::f32, d};
             Tensor v0 = random({N, C}, 3, 0.1, DType::f32);
             for (std::int64_t i = 0; i < v0.numel(); ++i) v0.data<float>()[i] = std::fabs(v0.data<float>()[i]);
             Tensor p = m.rand({N, C}, 1), mo = m.rand({N, C}, 2, 0.1), v = v0.to(d);
             const ops::AdamWSpec spec{
                 .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1, .step = 7};
             ops::adamw_step(p, mo, v, m.rand({N, C}, 4), spec);
             return host({p, mo, v});
           }},
      {.name = "accumulate, scale, sum_squares (37,300)",
       .f32_tol = 1e-6,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             Tensor y = m.rand({N, C}, 19);
             ops::accumulate(y, m.rand({N, C}, 18), -0.5);
             ops::scale(y, 3.0);
             return std::vector<Tensor>{m.host(y), scalar(ops::sum_squares(y))};
           }},
      {.name = "convert f32 -> bf16 -> f32 (37,300)",
       .real = false,
       .gpu_tol = 0,  // round to nearest even on both
       .run =
           [=](DType, Device d) {
             const Make m{DType::f32, d};
             Tensor b = m.empty({N, C}, DType::bf16), back = m.empty({N, C});
             ops::convert(b, m.rand({N, C}, 18));
             ops::convert(back, b);
             return host({b, back});
           }},
      {.name = "sum_into (4099)",
       .real = false,
       .gpu_tol = 0,  // in index order on both
       .run =
           [](DType, Device d) {
             const Make m{DType::f32, d};
             Tensor total = Tensor::zeros({1}, DType::f64, d);
             ops::sum_into(total, m.rand({4099}, 3, 5.0));
             return host({total});
           }},
  };
}

std::vector<OpCase> attention_cases() {
  const std::int64_t B = 2, T = 67, H = 4, Hkv = 2, D = 32;
  const bool fused = ops::fused_attention_on_gpu();
  return {
      {.name = "attention forward+backward, GQA (2,67,4|2,32)",
       .gpu_tol = 1e-5,
       .flops = 2.0 * 2 * B * H * T * T * D * 3,
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const Tensor q = m.rand({B, T, H, D}, 41), k = m.rand({B, T, Hkv, D}, 42), v = m.rand({B, T, Hkv, D}, 43),
                          dout = m.rand({B, T, H, D}, 44);
             Tensor out = m.empty(q.shape()), probs = m.empty({B, H, T, T}), dq = m.empty(q.shape()),
                    dk = m.empty(k.shape()), dv = m.empty(v.shape());
             ops::attention_forward(out, probs, q, k, v);
             ops::attention_backward(dq, dk, dv, dout, q, k, v, probs);
             return host({out, probs, dq, dk, dv});
           }},
      {.name = "attention_lse (fused form) forward+backward (2,128,8|2,64)",
       .gpu_tol = 2e-2,  // cuDNN in BF16: inputs and output rounded to 8 significant bits
       .on_gpu = fused,  // the GPU runs it only with cuDNN's fused attention
       .flops = 2.0 * 2 * 2 * 8 * 128 * 128 * 64 * 3,
       .run =
           [](DType r, Device d) {
             const Make m{r, d};
             const std::int64_t B = 2, T = 128, H = 8, Hkv = 2, D = 64;
             const Tensor q = m.rand({B, T, H, D}, 51), k = m.rand({B, T, Hkv, D}, 52), v = m.rand({B, T, Hkv, D}, 53),
                          dout = m.rand({B, T, H, D}, 54);
             Tensor out = m.empty(q.shape()), lse = m.empty({B, H, T}), dq = m.empty(q.shape()),
                    dk = m.empty(k.shape()), dv = m.empty(v.shape());
             ops::attention_lse_forward(out, lse, q, k, v);
             ops::attention_lse_backward(dq, dk, dv, dout, q, k, v, out, lse);
             return host({out, lse, dq, dk, dv});
           }},
      {.name = "attention and RoPE with document positions forward+backward (2,23,4|2,16)",
       .gpu_tol = 1e-5,
       .run =
           [](DType r, Device d) {
             const Make m{r, d};
             const std::int64_t B = 2, T = 23, H = 4, Hkv = 2, D = 16;
             std::vector<std::int32_t> pos;  // documents of 5, 1, 9, 8 tokens; then 23
             for (std::int64_t n : {5, 1, 9, 8, 23})
               for (std::int64_t i = 0; i < n; ++i) pos.push_back(static_cast<std::int32_t>(i));
             const Tensor positions = m.i32(pos, {B * T});
             Tensor q = m.rand({B, T, H, D}, 61), k = m.rand({B, T, Hkv, D}, 62);
             const Tensor v = m.rand({B, T, Hkv, D}, 63), dout = m.rand({B, T, H, D}, 64);
             ops::rope_forward(q, q, 10000.0, ops::RopePairs::half, {}, positions);
             ops::rope_forward(k, k, 10000.0, ops::RopePairs::half, {}, positions);
             Tensor out = m.empty(q.shape()), probs = m.empty({B, H, T, T}), dq = m.empty(q.shape()),
                    dk = m.empty(k.shape()), dv = m.empty(v.shape());
             ops::attention_forward(out, probs, q, k, v, positions);
             ops::attention_backward(dq, dk, dv, dout, q, k, v, probs);
             ops::rope_backward(dq, dq, 10000.0, ops::RopePairs::half, {}, positions);
             return host({q, k, out, probs, dq, dk, dv});
           }},
      {.name = "attention_cached (decoding 5 queries after 16 keys) with RoPE from position 16 (1,5|21,4|2,32)",
       .on_gpu = false,  // the CPU's for now: the GPU refuses it
       .run =
           [](DType r, Device d) {
             const Make m{r, d};
             Tensor q = m.rand({1, 5, 4, 32}, 71);
             const Tensor k = m.rand({1, 21, 2, 32}, 72), v = m.rand({1, 21, 2, 32}, 73);
             ops::rope_forward(q, q, 10000.0, ops::RopePairs::half, {}, Tensor(), 16);
             Tensor out = m.empty(q.shape());
             ops::attention_cached_forward(out, q, k, v);
             return host({q, out});
           }},
  };
}

std::vector<OpCase> router_cases() {
  const auto row = [](const char* name, ops::RouterSpec spec, std::int64_t E) {
    return OpCase{
        .name = name,
        .on_gpu = false,  // near-ties may pick another expert: tests/cuda's router test
        .run = [=](DType r, Device d) {
          const Make m{r, d};
          const std::int64_t N = 200, K = spec.top_k;
          const Tensor logits = m.rand({N, E}, 31, 3), bias = m.rand({E}, 32, 0.05);
          Tensor s = m.empty({N, E}), idx = m.empty({N, K}, DType::i32), g = m.empty({N, K}), dl = m.empty({N, E});
          ops::router_forward(s, idx, g, logits, bias, spec);
          ops::router_backward(dl, m.rand({N, K}, 33), s, idx, spec, m.rand({N, E}, 34, 0.1));
          return host({s, idx, g, dl});
        }};
  };
  return {row("router sigmoid, top-8 of 64 in 4 of 8 groups, normalised x2.5",
              {.kind = ops::RouterKind::sigmoid,
               .top_k = 8,
               .n_groups = 8,
               .topk_groups = 4,
               .normalize = true,
               .scaling = 2.5},
              64),
          row("router softmax, top-2 of 16",
              {.kind = ops::RouterKind::softmax,
               .top_k = 2,
               .n_groups = 1,
               .topk_groups = 1,
               .normalize = false,
               .scaling = 1.0},
              16)};
}

std::vector<OpCase> fp8_cases() {
  return {
      {.name = "quantize_1x128 and quantize_128x128, awkward values, (1,1) (3,299) (130,200) (257,384), pow2 or not",
       .real = false,
       .gpu_tol = 0,
       .run =
           [](DType, Device d) {
             std::vector<Tensor> out;
             for (const auto& [R, K] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {3, 299}, {130, 200}, {257, 384}})
               for (bool pow2 : {false, true}) {
                 const Tensor x = awkward({R, K}, std::uint64_t(R * 1000 + K)).to(d);
                 const std::int64_t T = (K + 127) / 128, B = (R + 127) / 128;
                 Tensor q = Tensor::empty({R, K}, DType::e4m3, d), s = Tensor::empty({R, T}, DType::f32, d);
                 Tensor qb = Tensor::empty({R, K}, DType::e4m3, d), sb = Tensor::empty({B, T}, DType::f32, d);
                 ops::quantize_1x128(q, s, x, pow2);
                 ops::quantize_128x128(qb, sb, x, pow2);
                 for (const Tensor& t : {q, s, qb, sb}) out.push_back(t.to(Device::cpu));
               }
             return out;
           }},
      {.name = "fp8 linear forward+backward on the reference GEMM, (1,1,1) (9,131,300) (64,256,512)",
       .real = false,
       .gpu_tol = 0,  // the reference GEMM is the CPU's definition, bit for bit
       .run =
           [](DType, Device d) {
             std::vector<Tensor> out;
             for (const auto& [M, N, K] : {std::array<std::int64_t, 3>{1, 1, 1}, {9, 131, 300}, {64, 256, 512}}) {
               const Make m{DType::f32, d};
               const Tensor x = m.rand({M, K}, 5, 2), w = m.rand({N, K}, 6, 0.1), dy = m.rand({M, N}, 7);
               const std::int64_t T = (K + 127) / 128;
               Tensor qx = m.empty({M, K}, DType::e4m3), sx = m.empty({M, T}), y = m.empty({M, N});
               ops::quantize_1x128(qx, sx, x);
               ops::fp8_linear_forward(y, qx, sx, w);
               // Backward: transposes, dequantisation and requantisation along M, with two
               // weight-gradient segments (as an expert's rows from two source ranks).
               const std::vector<std::int64_t> segments = {0, M / 2, M};
               Tensor dx = m.empty({M, K}), dw = m.rand({N, K}, 8, 0.1);
               ops::fp8_linear_backward(dx, dw, dy, qx, sx, w, segments);
               for (const Tensor& t : {y, dx, dw}) out.push_back(t.to(Device::cpu));
             }
             return out;
           }},
  };
}

std::vector<OpCase> row_cases() {
  const std::int64_t N = 300, C = 515, M = 200, W = 4;
  std::vector<std::int32_t> slots, valid;
  for (std::int32_t j = 0; j < M * W; ++j) slots.push_back(j % 3 == 1 ? -1 : (j * 7 + j / 5) % std::int32_t(N));
  for (auto v : slots)
    if (v >= 0 && std::ssize(valid) < M) valid.push_back(v);
  const std::vector<std::int32_t> rows(slots.begin(), slots.begin() + M);
  return {
      {.name = "gather_rows of FP8 codes (bytes)",
       .real = false,
       .gpu_tol = 0,
       .run =
           [=](DType, Device d) {
             const Make m{DType::f32, d};
             Tensor q = m.empty({N, C}, DType::e4m3), s = m.empty({N, 5}), got = m.empty({M, C}, DType::e4m3);
             ops::quantize_1x128(q, s, m.rand({N, C}, 21, 2));
             ops::gather_rows(got, q, m.i32(rows, {M}));
             return host({got});
           }},
      {.name = "gather_rows and combine_rows, weighted or not, accumulating or not",
       .gpu_tol = 0,  // sums in slot order on both
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const Tensor in = m.rand({N, C}, 21, 2), w = m.rand({M, W}, 22), slot = m.i32(slots, {M, W});
             std::vector<Tensor> out;
             Tensor got = m.empty({M, C});
             ops::gather_rows(got, in, m.i32(rows, {M}));
             out.push_back(m.host(got));
             for (bool weighted : {false, true})
               for (bool accumulate : {false, true}) {
                 Tensor y = m.rand({M, C}, 23);
                 ops::combine_rows(y, in, slot, weighted ? w : Tensor(), accumulate);
                 out.push_back(m.host(y));
               }
             return out;
           }},
      {.name = "row_dot (200 row pairs of 515)",
       .f32_tol = 1e-6,
       .gpu_tol = 1e-7,  // in double on both, in another order on the GPU
       .run =
           [=](DType r, Device d) {
             const Make m{r, d};
             const Tensor a = m.rand({N, C}, 21, 2);
             Tensor out = m.empty({M});
             ops::row_dot(out, a, m.i32(valid, {M}), a.rows(0, M));
             return host({out});
           }},
  };
}

std::vector<OpCase> routing_cases() {
  // A routing of the model's size: 4096 tokens, top-8 of 64 experts on 8 ranks, capacity 563
  // over tokens [100, 3000).
  const std::int64_t N = 4096, K = 8, E = 64, P = 8, El = E / P, T = 1024;
  std::vector<std::int32_t> choice(static_cast<std::size_t>(N * K));
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t k = 0; k < K; ++k)
      choice[std::size_t(n * K + k)] = static_cast<std::int32_t>((n * 13 + k * (7 + n % 5)) % E);
  return {
      {.name = "dispatch plan: route_capacity, route_pairs, counting_sort, invert_positions, dispatch_slots, "
               "pick_instances (2 replica slots a rank, experts 0-15 replicated once)",
       .real = false,
       .gpu_tol = 0,
       .run =
           [=](DType, Device d) {
             const Make m{DType::f32, d};
             const Tensor index = m.i32(choice, {N, K});
             Tensor kept = m.empty({N, K}, DType::i32), counts = m.empty({2, E}, DType::i32);
             ops::route_capacity(kept, counts, index, 563, 100, 3000);
             Tensor pairs = m.empty({N, P}, DType::i32), fan = m.empty({1}, DType::i32);
             ops::route_pairs(pairs, fan, kept, El);
             Tensor rows = m.empty({N * P}, DType::i32), send = m.empty({P}, DType::i32);
             ops::counting_sort(rows, send, pairs.view({N * P}), P);
             const Tensor sent = m.host(send);
             std::int64_t S = 0;
             for (std::int64_t j = 0; j < P; ++j) S += sent.data<std::int32_t>()[j];
             Tensor token = m.empty({S}, DType::i32), ex = m.empty({S, K}, DType::i32),
                    as = m.empty({S * K}, DType::i32);
             ops::invert_positions(token, rows, P);
             ops::dispatch_slots(ex, as, kept, rows.view({N, P}), El);
             // Expert e's instances: its owner's (rank e / El, slot e % El of El + 2), and for
             // e < 16 replica slot e, on rank e / 2 at place El + e % 2.
             std::vector<std::int32_t> table(std::size_t(E) + 1, 0), list;
             for (std::int64_t e = 0; e < E; ++e) {
               list.push_back(static_cast<std::int32_t>(e / El * (El + 2) + e % El));
               if (e < 16) list.push_back(static_cast<std::int32_t>(e / 2 * (El + 2) + El + e % 2));
               table[std::size_t(e) + 1] = static_cast<std::int32_t>(list.size());
             }
             table.insert(table.end(), list.begin(), list.end());
             Tensor inst = m.empty({N, K}, DType::i32), per = m.empty({P * (El + 2)}, DType::i32);
             ops::pick_instances(inst, per, kept, m.i32(table, {std::int64_t(table.size())}), E);
             return host({kept, counts, pairs, fan, rows, send, token, ex, as, inst, per});
           }},
      {.name = "balance loss forward+backward (4 sequences of 1024, 64 experts)",
       .real = false,
       .gpu_tol = 0,  // in double, in the CPU's order
       .run =
           [=](DType, Device d) {
             const Make m{DType::f32, d};
             Tensor sc = random({N, E}, 31, 0.45, DType::f32);
             for (std::int64_t i = 0; i < N * E; ++i) sc.data<float>()[i] += 0.5f;
             const Tensor scores = sc.to(d), index = m.i32(choice, {N, K});
             Tensor total = Tensor::zeros({1}, DType::f64, d), f = Tensor::empty({N / T, E}, DType::f64, d),
                    ds = m.empty({N, E});
             ops::balance_loss_forward(total, f, scores, index, T, 0.01);
             ops::balance_loss_backward(ds, f, scores, T, 0.01, 0.25);
             return host({total, f, ds});
           }},
      {.name = "router z-loss forward+backward (4 sequences of 1024, 64 experts)",
       .real = false,
       .gpu_tol = 1e-6,  // exp and log in double on both, summed in the same order
       .run =
           [=](DType, Device d) {
             const Make m{DType::f32, d};
             const Tensor logits = random({N, E}, 37, 3.0, DType::f32).to(d);
             Tensor total = Tensor::zeros({1}, DType::f64, d), lse = m.empty({N}), dl = m.zeros({N, E});
             ops::router_z_loss_forward(total, lse, logits, T, 0.001);
             ops::router_z_loss_backward(dl, logits, lse, T, 0.001, 0.25);
             return host({total, lse, dl});
           }},
  };
}

}  // namespace

const std::vector<OpCase>& op_cases() {
  static const std::vector<OpCase> cases = [] {
    std::vector<OpCase> all;
    for (auto part :
         {gemm_cases(), layer_cases(), attention_cases(), router_cases(), fp8_cases(), row_cases(), routing_cases()})
      for (auto& c : part) all.push_back(std::move(c));
    return all;
  }();
  return cases;
}

double norm_err(const Tensor& a, const Tensor& b) {
  const auto real = [](const Tensor& t) { return t.dtype() == DType::f32 || t.dtype() == DType::f64; };
  if (a.shape() != b.shape() || real(a) != real(b)) return 1;
  if (!real(a)) return a.dtype() == b.dtype() && same_bits(a, b) ? 0 : 1;
  double d = 0, n = 0;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double e = at(a, i) - at(b, i);
    d += e * e, n += at(b, i) * at(b, i);
  }
  return std::sqrt(d / std::max(n, 1e-300));
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), b.nbytes()) == 0;
}

}  // namespace moe::testing
