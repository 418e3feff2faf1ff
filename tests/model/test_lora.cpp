// LoRA (model/lora.h): the adapter's gradients against central finite differences (f64, a
// plain projection and per-expert groups, the base trained or frozen); and, through the whole
// model (GQA and MLA, dense FFN, shared and routed experts, MTP), the adapters' gradients
// against the chain rule through the merged weight W' = W + s B A of a model without them,
// whose forward the adapted model must equal.
#include <catch2/catch.hpp>

#include <map>

#include "kernels/ops.h"
#include "model/hf_names.h"
#include "model/linear.h"
#include "model/lora.h"
#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// A projection with an adapter, every tensor f64 (the ops take f64; Param makes f32).
struct Adapted {
  Param p;
  Adapted(const Shape& w_shape, std::int64_t rank, bool frozen)
      : p("model.layers.0.mlp.experts.up_proj.weight", w_shape) {
    if (w_shape.size() == 3) p.experts_total = w_shape[0];
    p.lora = make_lora(p, LoraConfig{.rank = rank, .alpha = 6.0, .targets = {"all-linear"}}, TensorParallel());
    p.w = random(w_shape, 1), p.g = frozen ? Tensor() : Tensor::zeros(w_shape, DType::f64);
    for (Param* f : {&p.lora->a, &p.lora->b})
      f->w = random(f->shape(), 2 + (f == &p.lora->b)), f->g = Tensor::zeros(f->shape(), DType::f64);
  }
};

void check_against_finite_differences(const Shape& w_shape, std::vector<std::int64_t> offsets, bool frozen) {
  const std::int64_t M = offsets.back(), N = w_shape[w_shape.size() - 2], K = w_shape.back();
  Adapted ad(w_shape, 3, frozen);
  Param& p = ad.p;
  const Gemm gemm(Precision::fp32);
  Tensor x = random({M, K}, 4);
  const Tensor R = random({M, N}, 5);  // loss = sum(y * R)
  const bool grouped = w_shape.size() == 3;
  auto loss = [&] {
    Tensor y = Tensor::empty({M, N}, DType::f64);
    if (grouped) gemm.grouped_forward(y, gemm.keep(x), p, offsets);
    else gemm.forward(y, gemm.keep(x), p);
    return dot(y, R);
  };
  Tensor dx = Tensor::empty({M, K}, DType::f64);
  const Tensor w_before = cast(p.w, DType::f64);  // a copy
  if (grouped) gemm.grouped_backward(dx, R, gemm.keep(x), p, offsets);
  else gemm.backward(dx, R, gemm.keep(x), p);
  CHECK(max_rel_err(dx, numeric_grad(x, loss)) < 1e-8);
  CHECK(max_rel_err(p.lora->a.g, numeric_grad(p.lora->a.w, loss)) < 1e-8);
  CHECK(max_rel_err(p.lora->b.g, numeric_grad(p.lora->b.w, loss)) < 1e-8);
  if (!frozen) CHECK(max_rel_err(p.g, numeric_grad(p.w, loss)) < 1e-8);
  else CHECK(max_rel_err(p.w, w_before) == 0);
}

ModelConfig small_model(AttentionType attention) {
  ModelConfig c;
  c.d_model = 16, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 8, c.ffn_hidden = 24, c.routed_experts = 4,
  c.shared_experts = 1, c.top_k = 2, c.n_layers = 2, c.dense_layers = 1, c.vocab_size = 40, c.seq_len = 8,
  c.mtp_depth = 1, c.attention = attention;
  if (attention == AttentionType::mla)
    c.q_lora_rank = 8, c.kv_lora_rank = 8, c.qk_nope_head_dim = 4, c.qk_rope_head_dim = 4, c.v_head_dim = 4;
  return c;
}
}  // namespace

TEST_CASE("lora: a projection's adapter gradients equal finite differences", "[model][lora]") {
  SECTION("plain, base trained") { check_against_finite_differences({5, 7}, {0, 6}, false); }
  SECTION("plain, base frozen: no weight gradient, weight untouched") {
    check_against_finite_differences({5, 7}, {0, 6}, true);
  }
  SECTION("routed experts, one pair per expert, an empty group") {
    check_against_finite_differences({3, 5, 7}, {0, 2, 2, 6}, true);
  }
}

TEST_CASE("lora: the adapted model equals its merged weights, and its adapters' gradients follow them",
          "[model][lora]") {
  const auto attention = GENERATE(AttentionType::gqa, AttentionType::mla);
  ModelConfig c = small_model(attention);
  const std::int64_t B = 2, T = 8;
  const Tensor tokens = random_ints({B * T}, 1, 0, 39), targets = random_ints({B * T}, 2, 0, 39);
  ModelConfig adapted_cfg = c;
  adapted_cfg.lora = {.rank = 2, .alpha = 3.0, .targets = {"all-linear"}};
  Transformer adapted(adapted_cfg), merged(c);
  adapted.init(7);
  merged.init(7);
  // B starts at zero (the base model); make it matter.
  std::uint64_t seed = 11;
  for (Param* f : adapted.adapters())
    if (f->name.find("lora_B") != std::string::npos) f->w.copy_from(random(f->shape(), seed++, 0.05, DType::f32));
  std::map<std::string, Param*> base;
  for (Param* p : merged.params()) base[p->name] = p;
  std::size_t adapted_count = 0;
  for (Param* p : adapted.params()) {
    if (!p->lora) continue;
    ++adapted_count;
    base.at(p->name)->w.copy_from(lora_merged(p->w, p->lora->a.w, p->lora->b.w, p->lora->scale));
  }
  // Three attention layers (two blocks, MTP's), 15 FFN projections (dense, two shared, two
  // routed), MTP's eh_proj.
  CHECK(adapted_count == 3 * (attention == AttentionType::gqa ? 4u : 5u) + 15 + 1);
  const auto la = adapted.forward(tokens, targets, B, T), lm = merged.forward(tokens, targets, B, T);
  CHECK(std::abs(la.ce_sum - lm.ce_sum) <= 1e-6 * std::abs(lm.ce_sum));
  CHECK(std::abs(la.mtp_sum - lm.mtp_sum) <= 1e-6 * std::abs(lm.mtp_sum));
  adapted.backward(1.0 / double(B * T), 1.0 / double(B));
  merged.backward(1.0 / double(B * T), 1.0 / double(B));
  // y = x W'^T with W' = W + s B A: dA = s B^T G and dB = s G A^T, G = dW' (per expert).
  for (Param* p : adapted.params()) {
    if (!p->lora) continue;
    INFO(p->name);
    const Tensor& G = base.at(p->name)->g;
    const LoraAdapter& ad = *p->lora;
    const bool experts = G.ndim() == 3;
    const std::int64_t E = experts ? G.size(0) : 1, N = G.size(G.ndim() - 2), K = G.size(G.ndim() - 1),
                       r = ad.a.shape()[ad.a.shape().size() - 2];
    Tensor da = Tensor::zeros(ad.a.shape(), DType::f64), db = Tensor::zeros(ad.b.shape(), DType::f64);
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t n = 0; n < N; ++n)
        for (std::int64_t k = 0; k < K; ++k) {
          const double g = at(G, (e * N + n) * K + k) * ad.scale;
          for (std::int64_t i = 0; i < r; ++i) {
            da.data<double>()[(e * r + i) * K + k] += at(ad.b.w, (e * N + n) * r + i) * g;
            db.data<double>()[(e * N + n) * r + i] += g * at(ad.a.w, (e * r + i) * K + k);
          }
        }
    CHECK(max_rel_err(cast(ad.a.g, DType::f64), da, 1e-6) < 1e-4);
    CHECK(max_rel_err(cast(ad.b.g, DType::f64), db, 1e-6) < 1e-4);
  }
}
