// The DeepSeek-V3-family transformer: embedding -> blocks -> RMSNorm -> LM head -> loss.
// Block: x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x)); FFN dense for the first dense_layers
// blocks, MoE after. Explicit forward/backward; activations saved by each layer.
#pragma once
#include <memory>
#include <vector>

#include "model/attention.h"
#include "model/config.h"
#include "model/ffn.h"
#include "model/moe.h"
#include "model/param.h"

namespace moe {

class Block {
 public:
  Block(const ModelConfig& c, std::int64_t layer, Communicator* ep);
  double forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T);  // returns balance loss
  void backward(Tensor& dx, const Tensor& dout, double aux_scale);
  void release();  // drop what forward saved but its input (recomputation)
  ParamList params();
  MoE* moe() { return moe_.get(); }

 private:
  double eps_;
  Param norm1_, norm2_;
  Attention attn_;
  std::unique_ptr<SwiGLU> dense_;
  std::unique_ptr<MoE> moe_;
  Tensor x_, h1_, r1_, xm_, h2_, r2_;  // saved
};

class Transformer {
 public:
  // ep: the expert-parallel group routed experts are sharded over (null: all experts here).
  explicit Transformer(const ModelConfig& c, Communicator* ep = nullptr);
  // Matrices ~ N(0, init_std), norm weights 1, router biases 0. Every tensor (every expert of
  // a routed-expert tensor) draws from its own stream seeded by (seed, name, expert), so the
  // values do not depend on how experts are spread over ranks.
  void init(std::uint64_t seed);

  struct Loss {
    double ce_sum = 0;   // sum of token cross-entropies (targets -1 excluded)
    double aux_sum = 0;  // balance loss summed over sequences and MoE layers
    std::int64_t tokens = 0;  // targets counted
  };
  // tokens, targets (B*T) i32.
  Loss forward(const Tensor& tokens, const Tensor& targets, std::int64_t B, std::int64_t T);
  // Gradient of ce_sum * ce_scale + aux_sum * aux_scale, accumulated into every Param::g.
  void backward(double ce_scale, double aux_scale);

  ParamList params();
  std::vector<MoE*> moe_layers();
  const ModelConfig& config() const { return cfg_; }
  // Full activation recomputation: forward keeps each block's input only; backward runs the
  // block's forward again just before its backward. Same gradients, bit for bit.
  void set_recompute(bool on) { recompute_ = on; }

 private:
  ModelConfig cfg_;
  Param embed_, norm_, head_;
  std::vector<std::unique_ptr<Block>> blocks_;
  // Saved by forward.
  Tensor tokens_, targets_, logits_, xf_, rf_;
  std::int64_t B_ = 0, T_ = 0;
  bool recompute_ = false;
  std::vector<Tensor> xs_;  // xs_[i] = input of block i; xs_.back() = final residual stream
};

}  // namespace moe
