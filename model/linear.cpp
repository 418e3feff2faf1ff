#include "model/linear.h"

#include <utility>
#include <vector>

#include "kernels/ops.h"
#include "model/lora.h"

namespace moe {
namespace {
constexpr std::int64_t kTile = 128;

Tensor widened(const Tensor& x) {  // bf16 -> f32, exact
  Tensor y = Tensor::empty(x.shape(), DType::f32, x.device());
  ops::convert(y, x);
  return y;
}
Tensor rounded(const Tensor& x) {  // f32 values rounded to the nearest BF16, as f32
  Tensor b = Tensor::empty(x.shape(), DType::bf16, x.device());
  ops::convert(b, x);
  return widened(b);
}
// The f32 operand a GEMM multiplies under fp32 / bf16.
Tensor operand(const GemmInput& x) { return x.x.dtype() == DType::bf16 ? widened(x.x) : x.x; }
Tensor bf16_bits(const Tensor& x) {  // f32 -> bf16, on x's device
  Tensor b = Tensor::empty(x.shape(), DType::bf16, x.device());
  ops::convert(b, x);
  return b;
}
// On the GPU, bf16 runs BF16 tensor-core GEMMs on the same rounded values the CPU multiplies
// in FP32, and fp8 takes cuBLASLt's block-scaled kernel where the CPU takes the bit-exact
// definition: equal up to FP32 accumulation order.
bool on_gpu(const Tensor& w) { return runs_cuda(w.device()); }
ops::Fp8Path fp8_path(const Tensor& w) { return on_gpu(w) ? ops::Fp8Path::sm90 : ops::Fp8Path::reference; }
// Expert g's (N,K) matrix of w (G,N,K), a view.
Tensor expert(const Tensor& w, std::int64_t g) { return w.rows(g, 1).view({w.size(1), w.size(2)}); }

thread_local WeightGrads* deferring = nullptr;

// Under a WeightGrads::Deferral: dx now (when asked for), dw queued with the dy and x it
// reads. `compute(dx, dw)` is the backward, either output undefined to skip it. False when
// nothing defers (the caller computes both).
template <class Compute>
bool defer_weights(Tensor& dx, const Tensor& dw, const Tensor& dy, const GemmInput& x, Compute compute) {
  WeightGrads* later = deferring;
  if (!later || !dw.defined()) return false;
  Tensor none;
  if (dx.defined()) compute(dx, none);
  later->defer(
      [compute, dw] {
        Tensor to = dw, no_dx;
        compute(no_dx, to);
      },
      dy, x);
  return true;
}
}  // namespace

WeightGrads::Deferral::Deferral(WeightGrads& into) : outer_(deferring) { deferring = &into; }
WeightGrads::Deferral::~Deferral() { deferring = outer_; }

void WeightGrads::defer(std::function<void()> dw, const Tensor& dy, const GemmInput& x) {
  work_.push_back(std::move(dw));
  held_.add(dy), held_.add(x);
}

void WeightGrads::run() {
  struct Restore {  // (computed now, not queued again; the outer queue back even if one throws)
    WeightGrads* outer = std::exchange(deferring, nullptr);
    ~Restore() { deferring = outer; }
  } restore;
  for (auto& dw : work_) dw();
  work_.clear();
  held_ = {};
}

GemmInput GemmInput::slice(std::int64_t begin, std::int64_t count) const {
  return {x.rows(begin, count), scale.defined() ? scale.rows(begin, count) : Tensor()};
}

GemmInput GemmInput::gather(const Tensor& src) const {
  const auto rows = [&](const Tensor& t) {
    if (!t.defined()) return Tensor();
    Tensor out = Tensor::empty({src.numel(), t.size(1)}, t.dtype(), t.device());
    ops::gather_rows(out, t, src);
    return out;
  };
  return {rows(x), rows(scale)};
}

GemmInput Gemm::empty(std::int64_t M, std::int64_t K, Device d) const {
  switch (p_) {
    case Precision::fp32: return {Tensor::empty({M, K}, DType::f32, d), {}};
    case Precision::bf16: return {Tensor::empty({M, K}, DType::bf16, d), {}};
    case Precision::fp8: break;
  }
  return {Tensor::empty({M, K}, DType::e4m3, d), Tensor::empty({M, (K + kTile - 1) / kTile}, DType::f32, d)};
}

GemmInput Gemm::keep(const Tensor& x) const {
  if (p_ == Precision::fp32) return {x, {}};
  GemmInput in = empty(x.size(0), x.size(1), x.device());
  if (p_ == Precision::bf16) ops::convert(in.x, x);
  else ops::quantize_1x128(in.x, in.scale, x);
  return in;
}

void Gemm::forward(Tensor& y, const GemmInput& x, const Tensor& w) const {
  switch (p_) {
    case Precision::fp32: return ops::matmul_forward(y, x.x, w);
    case Precision::bf16:
      if (on_gpu(w)) return ops::bf16_gemm(y, x.x, bf16_bits(w));
      return ops::matmul_forward(y, operand(x), rounded(w));
    case Precision::fp8: return ops::fp8_linear_forward(y, x.x, x.scale, w, fp8_path(w));
  }
}

void Gemm::backward(Tensor& dx, Tensor& dw, const Tensor& dy, const GemmInput& x, const Tensor& w) const {
  if (defer_weights(dx, dw, dy, x, [gemm = *this, dy, x, w](Tensor& a, Tensor& b) { gemm.backward(a, b, dy, x, w); }))
    return;
  switch (p_) {
    case Precision::fp32: return ops::matmul_backward(dx, dw, dy, x.x, w);
    case Precision::bf16:
      if (on_gpu(w)) {
        const Tensor dyb = bf16_bits(dy);
        if (dx.defined()) ops::bf16_gemm(dx, dyb, bf16_bits(w), false, false);  // dx = dy w
        if (dw.defined()) ops::bf16_gemm(dw, dyb, x.x, true, false, true);      // dw += dy^T x
        return;
      }
      return ops::matmul_backward(dx, dw, rounded(dy), operand(x), rounded(w));
    case Precision::fp8: return ops::fp8_linear_backward(dx, dw, dy, x.x, x.scale, w, {}, fp8_path(w));
  }
}

void Gemm::grouped_forward(Tensor& y, const GemmInput& x, const Tensor& w,
                           std::span<const std::int64_t> offsets) const {
  if (p_ == Precision::fp32 || (p_ == Precision::bf16 && !on_gpu(w)))
    return ops::grouped_matmul_forward(y, operand(x), p_ == Precision::bf16 ? rounded(w) : w, offsets);
  for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
    const std::int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    if (n == 0) continue;
    Tensor yg = y.rows(r0, n);
    forward(yg, x.slice(r0, n), expert(w, std::int64_t(g)));
  }
}

void Gemm::grouped_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const GemmInput& x, const Tensor& w,
                            std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments) const {
  if (defer_weights(dx, dw, dy, x,
                    [gemm = *this, dy, x, w, offsets = std::vector(offsets.begin(), offsets.end()),
                     segments = std::vector(segments.begin(), segments.end())](Tensor& a, Tensor& b) {
                      gemm.grouped_backward(a, b, dy, x, w, offsets, segments);
                    }))
    return;
  if (p_ == Precision::fp32 || (p_ == Precision::bf16 && !on_gpu(w))) {
    const bool b = p_ == Precision::bf16;
    return ops::grouped_matmul_backward(dx, dw, b ? rounded(dy) : dy, operand(x), b ? rounded(w) : w, offsets);
  }
  if (segments.empty()) segments = offsets;
  for (std::size_t g = 0; g + 1 < offsets.size(); ++g) {
    const std::int64_t r0 = offsets[g], n = offsets[g + 1] - r0;
    if (n == 0) continue;
    std::vector<std::int64_t> local;  // this group's segment starts, from its first row
    for (std::int64_t s : segments)
      if (s >= r0 && s <= r0 + n && (local.empty() || s - r0 > local.back())) local.push_back(s - r0);
    Tensor dxg = dx.defined() ? dx.rows(r0, n) : Tensor(), dwg = dw.defined() ? expert(dw, std::int64_t(g)) : Tensor();
    const GemmInput xg = x.slice(r0, n);
    if (p_ == Precision::bf16) backward(dxg, dwg, dy.rows(r0, n), xg, expert(w, std::int64_t(g)));  // (the GPU's)
    else
      ops::fp8_linear_backward(dxg, dwg, dy.rows(r0, n), xg.x, xg.scale, expert(w, std::int64_t(g)), local,
                               fp8_path(w));
  }
}

void Gemm::forward(Tensor& y, const GemmInput& x, const Param& p) const {
  forward(y, x, p.w);
  const std::int64_t whole[] = {0, x.rows()};
  if (p.lora) lora_forward(*this, y, x, *p.lora, whole);
}

void Gemm::backward(Tensor& dx, const Tensor& dy, const GemmInput& x, Param& p) const {
  backward(dx, p.g, dy, x, p.w);
  const std::int64_t whole[] = {0, x.rows()};
  if (p.lora) lora_backward(*this, dx, dy, x, *p.lora, whole, {});
}

void Gemm::grouped_forward(Tensor& y, const GemmInput& x, const Param& p, std::span<const std::int64_t> offsets) const {
  grouped_forward(y, x, p.w, offsets);
  if (p.lora) lora_forward(*this, y, x, *p.lora, offsets);
}

void Gemm::grouped_backward(Tensor& dx, const Tensor& dy, const GemmInput& x, Param& p,
                            std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments) const {
  grouped_backward(dx, p.g, dy, x, p.w, offsets, segments);
  if (p.lora) lora_backward(*this, dx, dy, x, *p.lora, offsets, segments);
}

}  // namespace moe
