#include <catch2/catch.hpp>
#include <cmath>
#include <tuple>

#include "kernels/ops.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
struct Attn {
  Tensor out, probs;
  Attn(const Tensor& q, DType t) {
    out = Tensor::empty(q.shape(), t);
    probs = Tensor::empty({q.size(0), q.size(2), q.size(1), q.size(1)}, t);
  }
};
}  // namespace

TEST_CASE("attention forward: zero queries average the visible values (causal, GQA)", "[ops][attention]") {
  // q = 0 makes every visible score equal: out[i] = mean(v[0..i]) of the head's kv group.
  const std::int64_t B = 2, T = 5, H = 4, Hkv = 2, D = 3;
  Tensor q = Tensor::zeros({B, T, H, D}, DType::f64), k = random({B, T, Hkv, D}, 1), v = random({B, T, Hkv, D}, 2);
  Attn a(q, DType::f64);
  ops::attention_forward(a.out, a.probs, q, k, v);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t i = 0; i < T; ++i)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t c = 0; c < D; ++c) {
          double mean = 0;
          for (std::int64_t j = 0; j <= i; ++j) mean += at(v, ((b * T + j) * Hkv + h / 2) * D + c) / double(i + 1);
          CHECK(at(a.out, ((b * T + i) * H + h) * D + c) == Approx(mean).margin(1e-14));
        }
}

TEST_CASE("attention backward matches finite differences", "[ops][attention]") {
  for (auto [B, T, H, Hkv, D] : {std::tuple{1, 1, 1, 1, 1}, {2, 5, 4, 2, 3}, {1, 7, 6, 3, 8}, {1, 4, 3, 1, 5}}) {
    Tensor q = random({B, T, H, D}, 3), k = random({B, T, Hkv, D}, 4), v = random({B, T, Hkv, D}, 5),
           R = random({B, T, H, D}, 6);
    Attn a(q, DType::f64);
    auto loss = [&] {
      ops::attention_forward(a.out, a.probs, q, k, v);
      return dot(a.out, R);
    };
    loss();
    Tensor dq = Tensor::empty(q.shape(), DType::f64), dk = random(k.shape(), 7), dv = random(v.shape(), 8);
    ops::attention_backward(dq, dk, dv, R, q, k, v, a.probs);  // dk, dv start as garbage: assign contract
    CHECK(max_rel_err(dq, numeric_grad(q, loss)) < 1e-6);
    CHECK(max_rel_err(dk, numeric_grad(k, loss)) < 1e-6);
    CHECK(max_rel_err(dv, numeric_grad(v, loss)) < 1e-6);
  }
}

TEST_CASE("attention in f32 agrees with f64", "[ops][attention]") {
  check_f32_matches_f64(
      [](DType t) {
        Tensor q = random({2, 17, 4, 8}, 9, 1, t), k = random({2, 17, 2, 8}, 10, 1, t),
               v = random({2, 17, 2, 8}, 11, 1, t), R = random({2, 17, 4, 8}, 12, 1, t);
        Attn a(q, t);
        ops::attention_forward(a.out, a.probs, q, k, v);
        Tensor dq = Tensor::empty(q.shape(), t), dk = Tensor::empty(k.shape(), t), dv = Tensor::empty(v.shape(), t);
        ops::attention_backward(dq, dk, dv, R, q, k, v, a.probs);
        return std::vector{a.out, dq, dk, dv};
      },
      1e-5);
}

TEST_CASE("attention rejects heads not divisible by kv heads", "[ops][attention]") {
  Tensor q = random({1, 2, 3, 4}, 1), k = random({1, 2, 2, 4}, 2);
  Attn a(q, DType::f64);
  CHECK_THROWS_WITH(ops::attention_forward(a.out, a.probs, q, k, k),
                    Catch::Contains("heads 3 not a multiple of kv heads 2"));
}

TEST_CASE("fused attention (log-sum-exp form) equals the probabilities form, forward and backward",
          "[ops][attention]") {
  for (auto [B, T, H, Hkv, D] : {std::tuple{1, 1, 1, 1, 1}, {2, 9, 4, 2, 3}, {1, 16, 6, 3, 8}}) {
    const Tensor q = random({B, T, H, D}, 13), k = random({B, T, Hkv, D}, 14), v = random({B, T, Hkv, D}, 15),
                 R = random({B, T, H, D}, 16);
    Attn a(q, DType::f64);
    ops::attention_forward(a.out, a.probs, q, k, v);
    Tensor out = Tensor::empty(q.shape(), DType::f64), lse = Tensor::empty({B, H, T}, DType::f64);
    ops::attention_lse_forward(out, lse, q, k, v);
    CHECK(max_rel_err(out, a.out) < 1e-14);
    // lse[b,h,i] = log sum_{j<=i} exp(q_i . k_j / sqrt(D)), written out here.
    double worst = 0;
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t h = 0; h < H; ++h)
        for (std::int64_t i = 0; i < T; ++i) {
          double sum = 0;
          for (std::int64_t j = 0; j <= i; ++j) {
            double s = 0;
            for (std::int64_t c = 0; c < D; ++c)
              s += at(q, ((b * T + i) * H + h) * D + c) * at(k, ((b * T + j) * Hkv + h / (H / Hkv)) * D + c);
            sum += std::exp(s / std::sqrt(double(D)));
          }
          worst = std::max(worst, std::abs(at(lse, (b * H + h) * T + i) - std::log(sum)));
        }
    CHECK(worst < 1e-12);
    Tensor dq = Tensor::empty(q.shape(), DType::f64), dk = Tensor::empty(k.shape(), DType::f64),
           dv = Tensor::empty(v.shape(), DType::f64);
    Tensor dq2 = Tensor::empty(q.shape(), DType::f64), dk2 = random(k.shape(), 17), dv2 = random(v.shape(), 18);
    ops::attention_backward(dq, dk, dv, R, q, k, v, a.probs);
    ops::attention_lse_backward(dq2, dk2, dv2, R, q, k, v, out, lse);
    CHECK(max_rel_err(dq2, dq) < 1e-12);
    CHECK(max_rel_err(dk2, dk) < 1e-12);
    CHECK(max_rel_err(dv2, dv) < 1e-12);
  }
}
