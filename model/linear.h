// The model's GEMMs under the run's precision (`precision:`; DeepSeek-V3's recipe):
//   fp32  y = x w^T in FP32 (OpenBLAS); backward keeps x as it is.
//   bf16  x, w (and dy in backward) rounded to BF16, products summed in FP32; x kept as BF16.
//   fp8   E4M3: x and dy per 1x128 tile, w per 128x128 block, FP32 promotion every 128
//         (ops::fp8_gemm); x kept as E4M3 codes plus scales.
// These are the attention projections, the dense FFN and the shared and routed experts. The
// embedding, LM head, router, norms, softmax and attention core never come here and stay
// FP32, as do the master weights, their gradients and the optimizer.
#pragma once
#include <cstdint>
#include <functional>
#include <set>
#include <span>
#include <vector>

#include "kernels/tensor.h"
#include "config/model_config.h"
#include "model/param.h"

namespace moe {

// A GEMM input (M,K) in the form its GEMM keeps for backward: x f32 (fp32) or bf16 (bf16), or
// e4m3 codes with scale (M, ceil(K/128)) f32 (fp8). Rows are independent in every form, so
// rows can be sliced, copied and sent to other ranks (the FP8 expert dispatch).
struct GemmInput {
  Tensor x, scale;
  std::int64_t rows() const { return x.defined() ? x.size(0) : 0; }
  std::size_t bytes() const { return (x.defined() ? x.nbytes() : 0) + (scale.defined() ? scale.nbytes() : 0); }
  GemmInput slice(std::int64_t begin, std::int64_t count) const;
  // Rows src[0], src[1], ... in a new input of the same form and device; src (R) i32 on that
  // device (ops::gather_rows).
  GemmInput gather(const Tensor& src) const;
};

// Bytes of what a forward saved for its backward, each buffer counted once (under fp32 a GEMM
// input is often also another layer's saved tensor). gemm_inputs: the GEMM inputs alone, in
// their kept form: what FP8 shrinks to a quarter. Index vectors are left out.
class SavedBytes {
 public:
  void add(const Tensor& t) { add_to(t, seen_, total_); }
  void add(const GemmInput& in) {
    for (const Tensor* t : {&in.x, &in.scale}) add_to(*t, seen_, total_), add_to(*t, seen_gemm_, gemm_);
  }
  std::size_t total() const { return total_; }
  std::size_t gemm_inputs() const { return gemm_; }

 private:
  static void add_to(const Tensor& t, std::set<const void*>& seen, std::size_t& sum) {
    if (t.defined() && t.numel() > 0 && seen.insert(t.address()).second) sum += t.nbytes();
  }
  std::set<const void*> seen_, seen_gemm_;
  std::size_t total_ = 0, gemm_ = 0;
};

// Weight gradients left for later: a zero-bubble pipeline (DualPipeV's `inputs` units) runs a
// backward for its input gradient alone and the weight gradients (dw += dy^T x of every GEMM,
// LoRA's A factors with them; the LM head's, the router's, norms' and B factors' are not
// Gemm's and stay in the backward) when the stage would otherwise idle. While a Deferral is
// alive, every Gemm backward on this thread computes dx and queues its dw here, holding dy
// and x (so its callers must not overwrite dy afterwards); run() then adds them in the order
// they were queued, so each gradient gets the same sum as without the split, bit for bit.
class WeightGrads {
 public:
  class Deferral {
   public:
    explicit Deferral(WeightGrads& into);
    ~Deferral();
    Deferral(const Deferral&) = delete;
    Deferral& operator=(const Deferral&) = delete;

   private:
    WeightGrads* outer_;
  };
  // dw's computation, holding dy and x until it runs.
  void defer(std::function<void()> dw, const Tensor& dy, const GemmInput& x);
  void run();
  bool empty() const { return work_.empty(); }
  std::size_t size() const { return work_.size(); }
  // What the queue holds (each buffer once): every dy and x, and of them the GEMM inputs.
  const SavedBytes& held() const { return held_; }

 private:
  std::vector<std::function<void()>> work_;
  SavedBytes held_;
};

class Gemm {
 public:
  explicit Gemm(Precision p = Precision::fp32) : p_(p) {}
  Precision precision() const { return p_; }
  // x (M,K) f32 in this precision's kept form (fp32: x itself, no copy), and an empty one.
  GemmInput keep(const Tensor& x) const;
  GemmInput empty(std::int64_t M, std::int64_t K, Device d = Device::cpu) const;

  // y (M,N) = x w^T, w (N,K) f32.
  void forward(Tensor& y, const GemmInput& x, const Tensor& w) const;
  // dx (M,K) = dy w (assign; skipped when undefined); dw (N,K) += dy^T x (accumulate).
  void backward(Tensor& dx, Tensor& dw, const Tensor& dy, const GemmInput& x, const Tensor& w) const;
  // Routed experts: rows grouped by expert, group g = rows [offsets[g], offsets[g+1]), w (G,N,K)
  // (ops::grouped_matmul_*). Under fp8 the weight gradient's tiles along the rows start
  // afresh at every entry of `segments` (offsets refined, e.g. by source rank; empty: offsets).
  void grouped_forward(Tensor& y, const GemmInput& x, const Tensor& w, std::span<const std::int64_t> offsets) const;
  void grouped_backward(Tensor& dx, Tensor& dw, const Tensor& dy, const GemmInput& x, const Tensor& w,
                        std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments = {}) const;
  // A model projection p (w = p.w): the same, plus p's LoRA update when it has one
  // (model/lora.h); p.g undefined (frozen) skips the weight gradient.
  void forward(Tensor& y, const GemmInput& x, const Param& p) const;
  void backward(Tensor& dx, const Tensor& dy, const GemmInput& x, Param& p) const;
  void grouped_forward(Tensor& y, const GemmInput& x, const Param& p, std::span<const std::int64_t> offsets) const;
  void grouped_backward(Tensor& dx, const Tensor& dy, const GemmInput& x, Param& p,
                        std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments = {}) const;

  // Whether rows that travel between ranks outside a GEMM's input (the MoE's output
  // gradients) go as BF16 rather than FP32.
  bool bf16_wire() const { return p_ != Precision::fp32; }

 private:
  Precision p_;
};

}  // namespace moe
