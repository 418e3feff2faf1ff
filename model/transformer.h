// The DeepSeek-V3-family transformer: embedding -> blocks (model/block.h) -> RMSNorm -> LM
// head -> loss, then model.mtp_depth multi-token-prediction depths (model/mtp.h) through the
// same embedding and head. Explicit forward/backward; activations saved by each layer.
//
// Multi-token prediction: depth k at position i reads the token at i + k and predicts the
// target at i + k (the token k + 1 places ahead); its cross-entropy sum over the batch,
// summed over depths, is Loss::mtp_sum. The trained loss adds mtp_weight / mtp_depth times it
// over the main loss's token count (the report's 1/T), so the gradient of mtp_sum is
// ce_scale * mtp_weight / mtp_depth. The last k positions of a sequence have no token k
// ahead: they read a zero embedding and predict nothing.
//
// One object may hold a part of the model (ModelShard): a pipeline stage's blocks (the
// embedding with the first, the final norm, LM head, loss and MTP with the last; a last stage
// with MTP holds a copy of the embedding, Param::tied_copy), tensor-parallel
// shards of them (model/tensor_parallel.h), routed experts split over ep (model/moe.h).
#pragma once
#include <memory>
#include <vector>

#include "config/model_config.h"
#include "model/block.h"
#include "model/mtp.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

// What one rank holds of the model.
struct ModelShard {
  std::int64_t layer_begin = 0, layer_end = -1;  // blocks [begin, end) (-1: to the last)
  ExpertGroup ep = {};         // the expert-parallel group routed experts are split over (none: all here)
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
    double mtp_sum = 0;       // the MTP depths' cross-entropy sums, summed (0 without MTP)
    std::int64_t tokens = 0;  // targets counted
  };
  // The whole model (a single stage): tokens, targets (B*T) i32, and positions (B*T) i32 with
  // document masking (model/sequences.h; undefined: none). Starts a fresh cross-entropy total
  // (one forward_stage left untaken is dropped) and returns its sum.
  Loss forward(const Tensor& tokens, const Tensor& targets, std::int64_t B, std::int64_t T,
               const Tensor& positions = Tensor());
  // Inference with a KV cache: the logits (N,V) after each of one sequence's N new tokens
  // (N) i32, read after the cache's; the cache then holds them too. A whole model (one stage,
  // no tp); cache from new_cache, capacity tokens at most (ConfigError past it). MTP unused.
  Tensor decode(const Tensor& tokens, KvCache& cache);
  KvCache new_cache(std::int64_t capacity);
  // The cross-entropy, balance-loss and MTP sums of the forward_stage calls since the last
  // take (tokens 0), on the host (one copy from a device), the totals reset to 0; the
  // cross-entropies are 0 on a stage without the loss.
  Loss take_loss_sums();
  // Gradient of ce_sum * ce_scale + aux_sum * aux_scale + mtp_sum * ce_scale * mtp_weight /
  // mtp_depth, accumulated into every Param::g.
  void backward(double ce_scale, double aux_scale);
  // The MTP loss weight (train.mtp_loss_weight; the schedule sets it per step).
  void set_mtp_weight(double w) { mtp_weight_ = w; }

  // One micro-batch through chunk `chunk` of this pipeline stage. in: the previous stage's
  // output (B*T,C), unused if the chunk starts with the embedding. tokens (B*T) i32 are read
  // with the embedding and by MTP, targets (B*T) if the chunk ends with the loss, which it
  // returns; the others set out (B*T,C) and return the balance loss only. seq: the batch's
  // shape and its document positions, host or device (copied to the model's device here).
  Loss forward_stage(Tensor& out, const Tensor& in, const Tensor& tokens, const Tensor& targets, const Sequences& seq,
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
  // The embedding held here (the first stage's, or a last stage's copy for MTP); null if none.
  Param* embedding() { return embed_.get(); }
  // The model-wide ordinal (0 = the first MoE block) of each of moe_layers().
  std::vector<std::int64_t> moe_ordinals() const;
  bool in_chunk(const MoE* layer, int chunk) const;

  // Every parameter held here, each LoRA adapter's two factors after their projection.
  ParamList params();
  ParamList adapters();  // the LoRA factors alone (empty without lora.rank)
  std::vector<MoE*> moe_layers();
  const ModelConfig& config() const { return cfg_; }
  // Full activation recomputation: forward keeps each block's input only; backward runs the
  // block's forward again just before its backward. Same gradients, bit for bit.
  void set_recompute(bool on);
  // Everything forward saved for backward, handed out (the model then holds none) and back:
  // a pipeline stage keeps one per micro-batch in flight (1F1B). With recomputation it is
  // the blocks' inputs alone.
  // What one LM head's loss saved: its targets, logits and (tp) the log-sum-exp.
  struct HeadSaved {
    Tensor targets, logits, lse;
    void count(SavedBytes& b) const {
      for (const Tensor* t : {&targets, &logits, &lse}) b.add(*t);
    }
  };
  // One MTP depth's: the embedding rows of its tokens, its output (its head's input) and head.
  struct MtpSaved {
    Tensor tokens, out;
    HeadSaved head;
    void count(SavedBytes& b) const { b.add(tokens), b.add(out), head.count(b); }
  };
  struct Saved {
    Sequences seq;           // the micro-batch's shape and document positions (on the model's device)
    std::vector<Tensor> xs;  // xs[i] = input of block i; xs.back() = the final residual stream
    Tensor tokens;           // this rank's vocabulary rows of the input ids (-1: elsewhere under tp)
    Tensor xf, rf;           // the final norm's output (the head's input) and rstd
    HeadSaved head;
    std::vector<MtpSaved> mtp;
    std::vector<Block::Saved> blocks;
    std::vector<MtpLayer::Saved> mtp_layers;
    void count(SavedBytes& b) const {
      b.add(seq.positions);
      for (const Tensor& t : xs) b.add(t);
      for (const Tensor* t : {&tokens, &xf, &rf}) b.add(*t);
      head.count(b);
      for (const auto& s : mtp) s.count(b);
      for (const auto& s : blocks) s.count(b);
      for (const auto& s : mtp_layers) s.count(b);
    }
  };
  Saved take_saved(int chunk = 0);
  void restore_saved(Saved s, int chunk = 0);

 private:
  // Token ids (B*T) from the loader as the embedding's rows on the model's device: shifted
  // `shift` places left within each sequence of T (past its end: -1, no row) and, under tp,
  // this rank's rows (-1: held elsewhere). Out-of-range ids are refused. With document
  // positions (host, or null), a token of a later document than the row's is -1 too.
  Tensor embedding_rows(const Tensor& ids, std::int64_t T, std::int64_t shift, const std::int32_t* pos = nullptr) const;
  // The LM head's loss on xf (N,C): logits, cross-entropies summed into total (1) f64; and
  // dxf (N,C) (assign) from the cross-entropies' gradient `scale` each.
  void head_forward(HeadSaved& s, const Tensor& xf, Tensor& total);
  void head_backward(Tensor& dxf, const HeadSaved& s, const Tensor& xf, double scale);
  // positions: the batch's document positions (host or device; undefined: none).
  void mtp_forward(const Tensor& tokens, const Tensor& targets, const Tensor& positions);
  void mtp_backward(Tensor& dxf, double scale, double aux_scale);  // dxf += the depths' gradient of xf

  ModelConfig cfg_;
  TensorParallel tp_;
  std::int64_t v0_ = 0;  // first vocabulary row held (tp)
  Device device_ = Device::cpu;
  std::unique_ptr<Param> embed_, norm_, head_;  // on the first / last stage
  std::vector<std::unique_ptr<Block>> blocks_;  // every chunk's, in order
  std::vector<std::unique_ptr<MtpLayer>> mtp_;  // the MTP depths (with the loss)
  double mtp_weight_ = 0.3;
  std::vector<std::size_t> chunk_first_;  // chunk c: blocks_[chunk_first_[c], chunk_first_[c+1])
  std::vector<std::int64_t> layer_of_;    // model layer of each block (and L past the end)
  Saved saved_;                           // what forward saved, its only home (the blocks' parts live in the blocks)
  bool recompute_ = false;
  // f64 (3) on the device: forward_stage's cross-entropy, balance-loss and MTP sums (take_loss_sums).
  Tensor loss_totals_;
  Tensor& loss_totals();
  Tensor recompute_aux_;  // f64 (1): where a recomputed forward's balance loss goes (dropped)
};

}  // namespace moe
