// The model under bf16 and fp8 (model/linear.h) against itself in fp32, the oracle: the same
// weights and inputs give outputs and gradients within each format's rounding. Each GEMM
// operand carries a relative error of about 2^-9 (BF16) or 2^-4 (E4M3, half an ulp); a
// mistake in what surrounds the GEMMs (a scale, a gate, a row sent to the wrong slot) is off
// by the size of the term itself. Routing is discrete: a whole model's expert gradients are
// compared through one MoE layer fed the same input (in a whole model, rounding upstream
// flips some choices: 9 of 128 here under fp8, moving whole rows between experts).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <tuple>

#include "kernels/ops.h"
#include "model/moe.h"
#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;

namespace {
// ||a - b|| / ||b||.
double norm_err(const Tensor& a, const Tensor& b) {
  Tensor d = Tensor::empty(a.shape(), DType::f32);
  d.copy_from(a);
  ops::accumulate(d, b, -1.0);
  return std::sqrt(ops::sum_squares(d) / std::max(ops::sum_squares(b), 1e-300));
}

ModelConfig micro() {
  ModelConfig c;
  c.d_model = 160, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 48, c.ffn_hidden = 136, c.routed_experts = 8,
  c.top_k = 2, c.shared_experts = 1, c.n_layers = 2, c.dense_layers = 1, c.vocab_size = 64, c.seq_len = 16,
  c.aux_loss_coef = 0.01;
  return c;
}

// Tolerances per precision: loss, and each gradient's norm-wise error (half of it for the
// MoE layer's output and dx). Measured: bf16 3e-5 and 0.007; fp8 1.4e-3 and 0.12 (a chain of
// four E4M3 GEMMs from the loss to an attention weight), 0.06 for the MoE output.
const std::tuple<Precision, double, double> kCases[] = {{Precision::bf16, 1e-3, 0.02}, {Precision::fp8, 1e-2, 0.2}};

// Loss and every parameter gradient of one forward and backward.
std::pair<double, std::vector<Param*>> step(Transformer& m, std::int64_t B, std::int64_t T) {
  const Tensor tokens = testing::random_ints({B * T}, 3, 0, 63), targets = testing::random_ints({B * T}, 4, 0, 63);
  m.init(11);
  const auto loss = m.forward(tokens, targets, B, T);
  m.backward(1.0 / double(B * T), 1.0 / double(B));
  return {loss.ce_sum / double(B * T) + loss.aux_sum / double(B), m.params()};
}
}  // namespace

TEST_CASE("precision: a model's loss and gradients under bf16 and fp8 are fp32's within rounding", "[model][fp8]") {
  const std::int64_t B = 4, T = 16;
  for (bool experts : {false, true}) {
    ModelConfig c = micro();
    if (!experts) c.routed_experts = 0;  // dense: every gradient comparable
    Transformer ref_model(c, {}, Precision::fp32);
    const auto [ref_loss, ref] = step(ref_model, B, T);
    for (const auto& [p, loss_tol, grad_tol] : kCases) {
      INFO(precision_name(p) << (experts ? " MoE" : " dense"));
      Transformer model(c, {}, p);
      const auto [loss, got] = step(model, B, T);
      const double loss_err = std::abs(loss - ref_loss) / ref_loss;
      double worst = 0;
      for (std::size_t i = 0; i < ref.size() && !experts; ++i) {
        INFO(ref[i]->name);
        worst = std::max(worst, norm_err(got[i]->g, ref[i]->g));
        CHECK(norm_err(got[i]->g, ref[i]->g) <= grad_tol);
      }
      std::printf("%s %s vs fp32: loss %.2e relative%s\n", precision_name(p), experts ? "MoE" : "dense", loss_err,
                  experts ? "" : fmt::format(", worst gradient {:.2e}", worst).c_str());
      CHECK(loss_err <= loss_tol);
      CHECK(loss_err > 0);  // the precision took effect
    }
  }
}

TEST_CASE("precision: an MoE layer under bf16 and fp8 is fp32's within rounding", "[model][fp8]") {
  const ModelConfig c = micro();
  const std::int64_t B = 4, T = 16, N = B * T, C = c.d_model;
  const Tensor x = testing::cast(testing::random({N, C}, 5, 1.0), DType::f32),
               dout = testing::cast(testing::random({N, C}, 6, 1.0), DType::f32);
  auto run = [&](Precision p) {
    auto m = std::make_unique<MoE>(c, "mlp.", nullptr, TensorParallel(), Gemm(p));
    std::uint64_t seed = 20;
    for (Param* q : m->params()) q->w.copy_from(testing::cast(testing::random(q->w.shape(), seed++, 0.1), DType::f32));
    Tensor out = Tensor::empty({N, C}, DType::f32), dx = Tensor::empty({N, C}, DType::f32),
           aux = Tensor::zeros({1}, DType::f64);
    m->forward(out, x, B, T, aux);
    m->backward(dx, dout, x, 0.5);
    return std::tuple{std::move(m), out, dx};
  };
  const auto [ref, out_ref, dx_ref] = run(Precision::fp32);
  for (const auto& [p, loss_tol, grad_tol] : kCases) {
    INFO(precision_name(p));
    const auto [m, out, dx] = run(p);
    CHECK(m->routing().numel() == ref->routing().numel());
    CHECK(std::memcmp(m->routing().raw(), ref->routing().raw(), ref->routing().nbytes()) == 0);  // same x: same choices
    const double eo = norm_err(out, out_ref), ed = norm_err(dx, dx_ref);
    double worst = 0;
    const auto got = m->params(), want = ref->params();
    for (std::size_t i = 0; i < want.size(); ++i) {
      INFO(want[i]->name);
      worst = std::max(worst, norm_err(got[i]->g, want[i]->g));
      CHECK(norm_err(got[i]->g, want[i]->g) <= grad_tol);
    }
    std::printf("%s MoE layer vs fp32: output %.2e, dx %.2e, worst gradient %.2e\n", precision_name(p), eo, ed, worst);
    CHECK(eo <= grad_tol / 2);
    CHECK(ed <= grad_tol / 2);
  }
}
