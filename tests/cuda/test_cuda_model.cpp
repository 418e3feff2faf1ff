// gpu-labelled: one training step of configs/tiny.yaml's model on the GPU against the same
// step on the CPU (the reference): loss, every parameter's gradient and the weights after
// AdamW. FP32 must agree within 1e-4 (cuBLASLt and the kernels sum in other orders than
// OpenBLAS and the CPU loops). BF16 and FP8 round operands to a few bits, so an order
// difference that moves a value across a rounding boundary changes it by one unit of the
// format: their tolerances are those units' size (stated below, per format).
#include <catch2/catch.hpp>
#include <cmath>
#include <string>

#include "kernels/ops.h"
#include "model/transformer.h"
#include "tests/support/testing.h"
#include "config/config.h"

using namespace moe;

namespace {
double rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }
// ||a - b|| / ||b||, a brought to the CPU.
double norm_rel(const Tensor& a, const Tensor& b) {
  const Tensor x = a.to(Device::cpu);
  double d = 0, n = 0;
  for (std::int64_t i = 0; i < b.numel(); ++i) {
    const double e = double(x.data<float>()[i]) - b.data<float>()[i];
    d += e * e, n += double(b.data<float>()[i]) * b.data<float>()[i];
  }
  return n == 0 ? std::sqrt(d) : std::sqrt(d / n);
}
struct Step {
  double loss = 0;
};
Step train_step(Transformer& m, const Tensor& tokens, const Tensor& targets, std::int64_t B, std::int64_t T) {
  const auto l = m.forward(tokens, targets, B, T);
  m.backward(1.0 / double(l.tokens), 1.0 / double(B));
  return {l.ce_sum / double(l.tokens) + l.aux_sum / double(B)};
}
void adamw(Transformer& m) {
  for (Param* p : m.params()) {
    Tensor mo = Tensor::zeros(p->w.shape(), DType::f32, p->w.device()),
           v = Tensor::zeros(p->w.shape(), DType::f32, p->w.device());
    ops::adamw_step(p->w, mo, v, p->g, {.lr = 1e-3, .weight_decay = p->decay ? 0.1 : 0.0});
  }
}
}  // namespace

TEST_CASE("cuda: a training step of the tiny config equals the CPU's (fp32 1e-4; bf16, fp8 within a rounding unit)",
          "[gpu][model]") {
  const Config cfg = load_config(std::string(MOE_SOURCE_DIR) + "/configs/tiny.yaml", {"model.aux_loss_coef=0.01"});
  const std::int64_t B = 4, T = cfg.model.seq_len;
  const Tensor tokens = testing::random_ints({B * T}, 1, 0, int(cfg.model.vocab_size) - 1),
               targets = testing::random_ints({B * T}, 2, 0, int(cfg.model.vocab_size) - 1);
  struct Tol {
    Precision p;
    double loss, grad, weight;
  };
  // bf16: 2^-8 relative per rounded operand; fp8 (E4M3): 2^-3 per code, averaged over a GEMM.
  for (const Tol& tol : {Tol{Precision::fp32, 1e-4, 1e-4, 1e-5}, Tol{Precision::bf16, 2e-3, 2e-2, 1e-4},
                         Tol{Precision::fp8, 5e-3, 5e-2, 1e-4}}) {
    INFO("precision " << precision_name(tol.p));
    Transformer cpu(cfg.model, ModelShard{}, tol.p), gpu(cfg.model, ModelShard{}, tol.p);
    cpu.init(7);
    gpu.init(7);
    gpu.to(Device::cuda);
    const Step a = train_step(cpu, tokens, targets, B, T), b = train_step(gpu, tokens, targets, B, T);
    CHECK(rel(b.loss, a.loss) < tol.loss);
    const ParamList pc = cpu.params(), pg = gpu.params();
    REQUIRE(pc.size() == pg.size());
    double worst_g = 0;
    for (std::size_t i = 0; i < pc.size(); ++i) {
      INFO(pc[i]->name);
      CHECK(pg[i]->g.device() == Device::cuda);
      worst_g = std::max(worst_g, norm_rel(pg[i]->g, pc[i]->g));
    }
    WARN(precision_name(tol.p) << ": loss " << a.loss << " vs " << b.loss << ", worst gradient " << worst_g);
    CHECK(worst_g < tol.grad);
    adamw(cpu);
    adamw(gpu);
    double worst_w = 0;
    for (std::size_t i = 0; i < pc.size(); ++i) worst_w = std::max(worst_w, norm_rel(pg[i]->w, pc[i]->w));
    CHECK(worst_w < tol.weight);
  }
}
