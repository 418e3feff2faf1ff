// The DeepSeek-V3-family transformer: embedding -> blocks -> RMSNorm -> LM head -> loss.
// Block: x += Attn(RMSNorm(x)); x += FFN(RMSNorm(x)); FFN dense for the first dense_layers
// blocks, MoE after. Explicit forward/backward; activations saved by each layer.
//
// One object may hold a part of the model (ModelShard): a pipeline stage's blocks (the
// embedding with the first, the final norm, LM head and loss with the last), tensor-parallel
// shards of them (model/tensor_parallel.h), routed experts split over ep (model/moe.h).
#pragma once
#include <memory>
#include <vector>

#include "model/attention.h"
#include "config/model_config.h"
#include "model/ffn.h"
#include "model/mla.h"
#include "model/moe.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

class Block {
 public:
  Block(const ModelConfig& c, std::int64_t layer, Communicator* ep, const TensorParallel& tp, Gemm gemm = Gemm());
  // aux_total (1) f64 on x's device += the balance loss of an MoE block (model/moe.h).
  void forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T, Tensor& aux_total);
  void backward(Tensor& dx, const Tensor& dout, double aux_scale);
  void release();  // drop what forward saved but its input (recomputation)
  // What forward saved (see Attention::Saved), its only home: x the input, r1 and r2 the
  // norms' rstd, xm the residual after attention, h2 the router's input (MoE). The
  // sublayers' parts live in the sublayers until swap_saved takes them out.
  struct Saved {
    Tensor x, r1, xm, h2, r2;
    Attention::Saved attn;
    MlaAttention::Saved mla;
    SwiGLU::Saved dense;
    MoE::Saved moe;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&x, &r1, &xm, &h2, &r2}) b.add(*t);
      attn.count(b), mla.count(b), dense.count(b), moe.count(b);
    }
  };
  void swap_saved(Saved& s);
  ParamList params();
  MoE* moe() { return moe_.get(); }

 private:
  double eps_;
  TensorParallel tp_;
  Gemm gemm_;
  Param norm1_, norm2_;
  std::unique_ptr<Attention> attn_;  // gqa, or
  std::unique_ptr<MlaAttention> mla_;
  std::unique_ptr<SwiGLU> dense_;
  std::unique_ptr<MoE> moe_;
  Saved saved_;  // (its attn / mla, dense and moe parts live in the sublayers)
};

// What one rank holds of the model.
struct ModelShard {
  std::int64_t layer_begin = 0, layer_end = -1;  // blocks [begin, end) (-1: to the last)
  Communicator* ep = nullptr;  // the expert-parallel group routed experts are split over (null: all here)
  Communicator* tp = nullptr;  // the tensor-parallel group (null: tp 1)
  // Several chunks of blocks (an interleaved pipeline's virtual stages), each [begin, end),
  // in order; when given, layer_begin/layer_end are unused.
  std::vector<std::pair<std::int64_t, std::int64_t>> chunks;
};

class Transformer {
 public:
  // precision: of the attention projections' and FFNs' GEMMs (model/linear.h).
  explicit Transformer(const ModelConfig& c, const ModelShard& shard = {}, Precision precision = Precision::fp32);
  // Matrices ~ N(0, init_std), norm weights 1, router biases 0. Every tensor (every expert of
  // a routed-expert tensor) draws from its own stream seeded by (seed, name, expert), so the
  // values do not depend on how experts are spread over ranks.
  void init(std::uint64_t seed);

  struct Loss {
    // Sum of token cross-entropies (targets -1 excluded) and the balance loss summed over
    // sequences and MoE layers: filled by forward(); forward_stage adds them to totals on the
    // model's device instead (take_loss_sums reads them).
    double ce_sum = 0;
    double aux_sum = 0;
    std::int64_t tokens = 0;  // targets counted
  };
  // The whole model (a single stage): tokens, targets (B*T) i32. Starts a fresh
  // cross-entropy total (one forward_stage left untaken is dropped) and returns its sum.
  Loss forward(const Tensor& tokens, const Tensor& targets, std::int64_t B, std::int64_t T);
  // The cross-entropy and balance-loss sums of the forward_stage calls since the last take
  // (ce_sum, aux_sum; tokens 0), on the host (one copy from a device), the totals reset to 0;
  // the cross-entropy is 0 on a stage without the loss.
  Loss take_loss_sums();
  // Gradient of ce_sum * ce_scale + aux_sum * aux_scale, accumulated into every Param::g.
  void backward(double ce_scale, double aux_scale);

  // One micro-batch through chunk `chunk` of this pipeline stage. in: tokens (B*T) i32 if
  // the chunk starts with the embedding, else the previous stage's output (B*T,C). targets
  // (B*T) are read if it ends with the loss, which it returns; the others set out (B*T,C)
  // and return the balance loss only.
  Loss forward_stage(Tensor& out, const Tensor& in, const Tensor& targets, std::int64_t B, std::int64_t T,
                     int chunk = 0);
  // dout: the gradient of out (unused with the loss). din (B*T,C): the gradient of in
  // (assign; left alone with the embedding). Parameters accumulate.
  void backward_stage(Tensor& din, const Tensor& dout, double ce_scale, double aux_scale, int chunk = 0);
  int chunks() const { return static_cast<int>(chunk_first_.size()) - 1; }
  // Moves every parameter (values and gradients) and the routers' biases to `d`; the model
  // then runs there: activations follow, token ids, targets and stage inputs are copied over
  // in forward_stage, and losses are read back. Parameters that share storage with a flat
  // buffer (ParamGroup) are left to their owner: call this before grouping them.
  void to(Device d);
  Device device() const { return device_; }
  bool has_embedding(int chunk = 0) const { return embed_ && layer_of_[chunk_first_[std::size_t(chunk)]] == 0; }
  bool has_loss(int chunk = 0) const { return head_ && chunk == chunks() - 1; }
  // The model-wide ordinal (0 = the first MoE block) of each of moe_layers().
  std::vector<std::int64_t> moe_ordinals() const;
  bool in_chunk(const MoE* layer, int chunk) const;

  ParamList params();
  std::vector<MoE*> moe_layers();
  const ModelConfig& config() const { return cfg_; }
  // Full activation recomputation: forward keeps each block's input only; backward runs the
  // block's forward again just before its backward. Same gradients, bit for bit.
  void set_recompute(bool on) { recompute_ = on; }
  // Everything forward saved for backward, handed out (the model then holds none) and back:
  // a pipeline stage keeps one per micro-batch in flight (1F1B). With recomputation it is
  // the blocks' inputs alone.
  struct Saved {
    std::vector<Tensor> xs;  // xs[i] = input of block i; xs.back() = the final residual stream
    Tensor tokens;           // this rank's vocabulary rows of the input ids (-1: elsewhere under tp)
    Tensor targets, logits, lse, xf, rf;
    std::vector<Block::Saved> blocks;
    void count(SavedBytes& b) const {
      for (const Tensor& t : xs) b.add(t);
      for (const Tensor* t : {&tokens, &targets, &logits, &lse, &xf, &rf}) b.add(*t);
      for (const auto& s : blocks) s.count(b);
    }
  };
  Saved take_saved(int chunk = 0);
  void restore_saved(Saved s, int chunk = 0);

 private:
  ModelConfig cfg_;
  TensorParallel tp_;
  std::int64_t v0_ = 0;  // first vocabulary row held (tp)
  Device device_ = Device::cpu;
  std::unique_ptr<Param> embed_, norm_, head_;  // on the first / last stage
  std::vector<std::unique_ptr<Block>> blocks_;  // every chunk's, in order
  std::vector<std::size_t> chunk_first_;        // chunk c: blocks_[chunk_first_[c], chunk_first_[c+1])
  std::vector<std::int64_t> layer_of_;          // model layer of each block (and L past the end)
  Saved saved_;  // what forward saved, its only home (the blocks' parts live in the blocks)
  std::int64_t B_ = 0, T_ = 0;
  bool recompute_ = false;
  // f64 (2) on the device: forward_stage's cross-entropy and balance-loss sums (take_loss_sums).
  Tensor loss_totals_;
  Tensor& loss_totals();
  Tensor recompute_aux_;  // f64 (1): where a recomputed forward's balance loss goes (dropped)
};

}  // namespace moe
