// One multi-token-prediction depth (DeepSeek-V3 report, section 2.2; released weights'
// model.layers.{n_layers + k - 1}.*). Depth k reads h (N,C), the normed hidden state the
// previous depth's LM head read (k = 1: the main model's model.norm output), and the
// embeddings of the tokens k places ahead, and computes
//   y   = Block(eh_proj [enorm(emb); hnorm(h)])    (embedding first, as the released weights)
//   out = shared_head.norm(y)                        the shared LM head's input and the next h.
// The embedding lookup and the LM head are the main model's (model/transformer.h). Under
// tensor parallelism the block is split as every block; eh_proj and the norms stay whole.
#pragma once
#include <utility>

#include "model/block.h"

namespace moe {

class MtpLayer {
 public:
  // depth 1, 2, ... (model.mtp_depth of them)
  MtpLayer(const ModelConfig& c, std::int64_t depth, const ExpertGroup& ep, const TensorParallel& tp, Gemm gemm);
  // out (N,C) from h (N,C) and emb (N,C); the block's balance loss += into aux_total (1) f64.
  void forward(Tensor& out, const Tensor& h, const Tensor& emb, const Sequences& seq, Tensor& aux_total);
  // dh, demb (N,C): the gradients of h and emb (assign); parameters accumulate.
  void backward(Tensor& dh, Tensor& demb, const Tensor& dout, double aux_scale);
  // Recomputation: forward keeps the block's input only; backward runs the block again.
  void set_recompute(bool on) { recompute_ = on; }
  // What forward saved: its inputs h and emb with their norms' rstd, eh_proj's input in its
  // GEMM's form, the block's output y and its norm's rstd; the block's own parts; the batch's
  // shape and document positions (recomputation runs the block again with them).
  struct Saved {
    Tensor h, emb, rh, re, y, ry;
    GemmInput cat;
    Sequences seq;
    Block::Saved block;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&h, &emb, &rh, &re, &y, &ry}) b.add(*t);
      b.add(cat);
      block.count(b);
    }
  };
  void swap_saved(Saved& s);
  ParamList params();
  Block& block() { return block_; }

 private:
  double eps_;
  Gemm gemm_;
  Param enorm_, hnorm_, eh_proj_, head_norm_;
  Block block_;
  bool recompute_ = false;
  Tensor recompute_aux_;  // f64 (1): where a recomputed forward's balance loss goes (dropped)
  Saved saved_;           // (its block part lives in the block)
};

}  // namespace moe
