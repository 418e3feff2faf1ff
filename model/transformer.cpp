#include "model/transformer.h"

#include <utility>

#include <fmt/format.h>

#include <random>

#include "kernels/ops.h"

namespace moe {

Block::Block(const ModelConfig& c, std::int64_t i, Communicator* ep, const TensorParallel& tp, Gemm gemm)
    : eps_(c.norm_eps),
      tp_(tp),
      gemm_(gemm),
      norm1_(fmt::format("model.layers.{}.input_layernorm.weight", i), {c.d_model}, false),
      norm2_(fmt::format("model.layers.{}.post_attention_layernorm.weight", i), {c.d_model}, false) {
  const std::string attn = fmt::format("model.layers.{}.self_attn.", i);
  if (c.attention == AttentionType::mla) mla_ = std::make_unique<MlaAttention>(c, attn, tp, gemm);
  else attn_ = std::make_unique<Attention>(c, attn, tp, gemm);
  tp.replicate(norm1_);
  tp.replicate(norm2_);
  const std::string mlp = fmt::format("model.layers.{}.mlp.", i);
  if (i < c.dense_layers || c.routed_experts == 0)
    dense_ = std::make_unique<SwiGLU>(c.d_model, c.ffn_hidden, mlp, tp, gemm);
  else moe_ = std::make_unique<MoE>(c, mlp, ep, tp, gemm);
}

ParamList Block::params() {
  ParamList ps = {&norm1_};
  for (Param* p : attn_ ? attn_->params() : mla_->params()) ps.push_back(p);
  ps.push_back(&norm2_);
  for (Param* p : dense_ ? dense_->params() : moe_->params()) ps.push_back(p);
  return ps;
}

void Block::forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T, Tensor& aux_total) {
  const std::int64_t N = x.size(0), C = x.size(1);
  auto t = [&](Shape shape) { return Tensor::empty(std::move(shape), DType::f32, x.device()); };
  Saved& s = saved_;
  // The norms' outputs are GEMM inputs: the layers keep them in their precision's form (the
  // router's input h2 stays FP32).
  Tensor h1 = t({N, C});
  s.x = x, s.r1 = t({N}), s.xm = t({N, C}), s.h2 = t({N, C}), s.r2 = t({N});
  ops::rmsnorm_forward(h1, s.r1, x, norm1_.w, eps_);
  if (attn_) attn_->forward(s.xm, h1, B, T);
  else mla_->forward(s.xm, h1, B, T);
  tp_.all_reduce(s.xm);      // tp: the row-parallel o_proj's partial sums
  ops::accumulate(s.xm, x);  // xm = x + attn(norm(x))
  ops::rmsnorm_forward(s.h2, s.r2, s.xm, norm2_.w, eps_);
  if (dense_) {
    dense_->forward(out, gemm_.keep(s.h2));
    s.h2 = Tensor();  // the dense FFN keeps its input in its GEMM's form
  } else {
    moe_->forward(out, s.h2, B, T, aux_total);
  }
  tp_.all_reduce(out);
  ops::accumulate(out, s.xm);  // out = xm + ffn(norm(xm))
}

void Block::swap_saved(Saved& s) {
  Attention::Saved attn = std::move(s.attn);
  MlaAttention::Saved mla = std::move(s.mla);
  SwiGLU::Saved dense = std::move(s.dense);
  MoE::Saved moe = std::move(s.moe);
  std::swap(saved_, s);
  if (attn_) attn_->swap_saved(attn), s.attn = std::move(attn);
  else mla_->swap_saved(mla), s.mla = std::move(mla);
  if (dense_) dense_->swap_saved(dense), s.dense = std::move(dense);
  else moe_->swap_saved(moe), s.moe = std::move(moe);
}

void Block::release() {
  Saved none;
  swap_saved(none);
  saved_.x = std::move(none.x);  // the input stays: recomputation starts from it
}

void Block::backward(Tensor& dx, const Tensor& dout, double aux_scale) {
  const Saved& s = saved_;
  const std::int64_t N = s.x.size(0), C = s.x.size(1);
  Tensor dh = Tensor::empty({N, C}, DType::f32, dout.device()), dxm = Tensor::empty({N, C}, DType::f32, dout.device());
  if (dense_) dense_->backward(dh, dout);
  else moe_->backward(dh, dout, s.h2, aux_scale);
  tp_.all_reduce(dh);  // tp: column-parallel inputs' partial gradients
  ops::rmsnorm_backward(dxm, norm2_.g, dh, s.xm, norm2_.w, s.r2);
  ops::accumulate(dxm, dout);  // residual
  if (attn_) attn_->backward(dh, dxm);
  else mla_->backward(dh, dxm);
  tp_.all_reduce(dh);
  ops::rmsnorm_backward(dx, norm1_.g, dh, s.x, norm1_.w, s.r1);
  ops::accumulate(dx, dxm);  // residual
}

Transformer::Transformer(const ModelConfig& c, const ModelShard& shard, Precision precision) : cfg_(c), tp_(shard.tp) {
  const std::int64_t L = c.n_layers, V = c.vocab_size;
  auto chunks = shard.chunks;
  if (chunks.empty()) chunks.push_back({shard.layer_begin, shard.layer_end < 0 ? L : shard.layer_end});
  v0_ = tp_.begin(V);
  for (const auto& [begin, end] : chunks) {
    MOE_CHECK(begin >= 0 && begin < end && end <= L && (layer_of_.empty() || begin > layer_of_.back()), ConfigError,
              "model shard: layers [{}, {}) outside the model's {} or out of order", begin, end, L);
    chunk_first_.push_back(blocks_.size());
    for (std::int64_t i = begin; i < end; ++i)
      blocks_.push_back(std::make_unique<Block>(c, i, shard.ep, tp_, Gemm(precision))), layer_of_.push_back(i);
  }
  chunk_first_.push_back(blocks_.size());
  if (chunks.front().first == 0) {
    embed_ = std::make_unique<Param>("model.embed_tokens.weight", Shape{tp_.part(V), c.d_model});
    tp_.split(*embed_, 0, V);
  }
  if (chunks.back().second == L) {
    norm_ = std::make_unique<Param>("model.norm.weight", Shape{c.d_model}, false);
    head_ = std::make_unique<Param>("lm_head.weight", Shape{tp_.part(V), c.d_model});
    tp_.replicate(*norm_);
    tp_.split(*head_, 0, V);
  }
  layer_of_.push_back(L);
}

void Transformer::to(Device d) {
  for (Param* p : params()) {
    if (p->w.device() != d) p->w = p->w.to(d);
    if (p->g.device() != d) p->g = p->g.to(d);
  }
  for (MoE* m : moe_layers())
    if (m->bias().device() != d) m->bias() = m->bias().to(d);
  device_ = d;
}

bool Transformer::in_chunk(const MoE* layer, int chunk) const {
  for (std::size_t i = chunk_first_[std::size_t(chunk)]; i < chunk_first_[std::size_t(chunk) + 1]; ++i)
    if (blocks_[i]->moe() == layer) return true;
  return false;
}

std::vector<std::int64_t> Transformer::moe_ordinals() const {
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i]->moe()) out.push_back(layer_of_[i] - cfg_.dense_layers);
  return out;
}

ParamList Transformer::params() {
  ParamList ps;
  if (embed_) ps.push_back(embed_.get());
  for (auto& b : blocks_)
    for (Param* p : b->params()) ps.push_back(p);
  if (head_) ps.push_back(norm_.get()), ps.push_back(head_.get());
  return ps;
}

std::vector<MoE*> Transformer::moe_layers() {
  std::vector<MoE*> out;
  for (auto& b : blocks_)
    if (b->moe()) out.push_back(b->moe());
  return out;
}

namespace {
// FNV-1a: a stable hash of a parameter's name (std::hash may differ between libraries).
std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}
}  // namespace

void Transformer::init(std::uint64_t seed) {
  // Non-expert tensors are one slice; an expert tensor has one slice per expert held here.
  // A tensor-parallel shard draws the whole tensor and keeps its part. Each slice draws from
  // its own generator (seeded by the run's seed, the tensor's name and the expert), so the
  // slices fill in parallel and the values depend on neither the thread count nor the layout.
  struct Slice {
    float* w;
    std::int64_t n;
    std::uint64_t name_hash, expert;
    bool ones;  // no decay = norm weights
  };
  const ParamList ps = params();
  std::vector<Tensor> values(ps.size());
  std::vector<Slice> slices;
  for (std::size_t i = 0; i < ps.size(); ++i) {
    Param* p = ps[i];
    values[i] = p->is_split() ? Tensor::empty(p->full_shape(), DType::f32) : p->w;
    const std::int64_t n = p->is_expert() ? p->w.size(0) : 1, per = values[i].numel() / n;
    for (std::int64_t j = 0; j < n; ++j)
      slices.push_back({values[i].data<float>() + j * per, per, fnv1a(p->name),
                        static_cast<std::uint64_t>(p->expert_begin + j), !p->decay});
  }
  const auto count = static_cast<std::int64_t>(slices.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t k = 0; k < count; ++k) {
    const Slice& s = slices[std::size_t(k)];
    std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(s.name_hash), static_cast<std::uint32_t>(s.name_hash >> 32),
                      static_cast<std::uint32_t>(s.expert)};
    std::mt19937_64 rng(seq);
    // A fresh distribution per slice: libstdc++'s caches the second value of each pair,
    // which would carry one slice's draw into the next and tie values to the layout.
    std::normal_distribution<float> normal(0.f, static_cast<float>(cfg_.init_std));
    for (std::int64_t i = 0; i < s.n; ++i) s.w[i] = s.ones ? 1.f : normal(rng);
  }
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (Param* p = ps[i]; p->is_split())
      p->w.copy_from(take_shard(values[i], p->split_dim, p->split_begin, p->w.size(p->split_dim)));
  for (MoE* m : moe_layers()) m->bias().zero();
}

Transformer::Loss Transformer::forward(const Tensor& tokens, const Tensor& targets, std::int64_t B, std::int64_t T) {
  MOE_CHECK(has_embedding() && has_loss(), ConfigError, "Transformer::forward: this object holds one pipeline stage");
  Tensor unused;
  loss_totals().zero();  // fresh totals
  const Loss stage = forward_stage(unused, tokens, targets, B, T);
  Loss loss = take_loss_sums();
  loss.tokens = stage.tokens;
  return loss;
}

Tensor& Transformer::loss_totals() {
  if (!loss_totals_.defined() || loss_totals_.device() != device())
    loss_totals_ = Tensor::zeros({2}, DType::f64, device());
  return loss_totals_;
}

Transformer::Loss Transformer::take_loss_sums() {
  if (!loss_totals_.defined()) return {};
  const Tensor sums = to_host(loss_totals_);  // (loss_totals_ itself on the CPU: read before the reset)
  const Loss loss{.ce_sum = sums.data<double>()[0], .aux_sum = sums.data<double>()[1], .tokens = 0};
  loss_totals_.zero();
  return loss;
}

Transformer::Saved Transformer::take_saved(int chunk) {
  const std::size_t b0 = chunk_first_[std::size_t(chunk)], b1 = chunk_first_[std::size_t(chunk) + 1];
  Saved s = std::exchange(saved_, Saved{});
  s.blocks.resize(b1 - b0);
  for (std::size_t i = b0; i < b1; ++i) blocks_[i]->swap_saved(s.blocks[i - b0]);
  return s;
}

void Transformer::restore_saved(Saved s, int chunk) {
  const std::size_t b0 = chunk_first_[std::size_t(chunk)];
  for (std::size_t i = 0; i < s.blocks.size(); ++i) blocks_[b0 + i]->swap_saved(s.blocks[i]);
  s.blocks.clear();  // (the blocks' parts live in the blocks)
  saved_ = std::move(s);
}

void Transformer::backward(double ce_scale, double aux_scale) {
  Tensor unused;
  backward_stage(unused, Tensor(), ce_scale, aux_scale);
}

Transformer::Loss Transformer::forward_stage(Tensor& out, const Tensor& in, const Tensor& targets, std::int64_t B,
                                             std::int64_t T, int chunk) {
  const std::int64_t N = B * T, C = cfg_.d_model;
  const std::size_t b0 = chunk_first_[std::size_t(chunk)], b1 = chunk_first_[std::size_t(chunk) + 1];
  const Device dev = device();
  Loss loss;
  if (has_embedding(chunk)) {
    // Vocabulary-parallel lookup: rows held elsewhere read as zeros, then the sum over tp.
    // Token ids come from the host (the data loader) and go to the model's device.
    saved_.tokens = in;
    if (tp_.on()) {
      saved_.tokens = Tensor::empty({N}, DType::i32);
      const std::int64_t Vl = embed_->w.size(0);
      const Tensor ids = to_host(in);
      for (std::int64_t n = 0; n < N; ++n) {
        const std::int32_t t = ids.data<std::int32_t>()[n];
        saved_.tokens.data<std::int32_t>()[n] = t >= v0_ && t < v0_ + Vl ? static_cast<std::int32_t>(t - v0_) : -1;
      }
    }
    if (saved_.tokens.device() != dev) {
      expect_ids("Transformer::forward", "token", saved_.tokens, tp_.on() ? -1 : 0,
                 embed_->w.size(0));  // the ops check no device ids
      saved_.tokens = saved_.tokens.to(dev);
    }
    saved_.xs.assign(1, Tensor::empty({N, C}, DType::f32, dev));
    ops::embedding_forward(saved_.xs[0], saved_.tokens, embed_->w, tp_.on());
    tp_.all_reduce(saved_.xs[0]);
  } else {
    saved_.xs.assign(1, in.device() == dev ? in : in.to(dev));
  }
  for (std::size_t i = b0; i < b1; ++i) {
    saved_.xs.push_back(Tensor::empty({N, C}, DType::f32, dev));
    Tensor aux = loss_totals().rows(1, 1);
    blocks_[i]->forward(saved_.xs.back(), saved_.xs[saved_.xs.size() - 2], B, T, aux);
    if (recompute_) blocks_[i]->release();
  }
  B_ = B, T_ = T;
  if (!has_loss(chunk)) {
    out = saved_.xs.back();
    return loss;
  }
  if (targets.device() != dev) expect_ids("Transformer::forward", "target", targets, -1, cfg_.vocab_size);
  saved_.targets = targets.device() == dev ? targets : targets.to(dev);
  const std::int64_t Vl = head_->w.size(0);
  saved_.xf = Tensor::empty({N, C}, DType::f32, dev), saved_.rf = Tensor::empty({N}, DType::f32, dev);
  ops::rmsnorm_forward(saved_.xf, saved_.rf, saved_.xs.back(), norm_->w, cfg_.norm_eps);
  saved_.logits = Tensor::empty({N, Vl}, DType::f32, dev);
  ops::matmul_forward(saved_.logits, saved_.xf, head_->w);
  Tensor losses = Tensor::empty({N}, DType::f32, dev);
  if (tp_.on()) {
    saved_.lse = Tensor::empty({N}, DType::f32);
    vocab_parallel_ce_forward(losses, saved_.lse, saved_.logits, saved_.targets, v0_, tp_);
  } else {
    ops::cross_entropy_forward(losses, saved_.logits, saved_.targets);
  }
  Tensor ce = loss_totals().rows(0, 1);
  ops::sum_into(ce, losses);           // read once per step (take_loss_sums), not per micro-batch
  const Tensor tg = to_host(targets);  // the loader's host tensor: no copy
  for (std::int64_t n = 0; n < N; ++n) loss.tokens += tg.data<std::int32_t>()[n] >= 0;
  return loss;
}

void Transformer::backward_stage(Tensor& din, const Tensor& dout, double ce_scale, double aux_scale, int chunk) {
  const std::int64_t N = saved_.xs[0].size(0), C = cfg_.d_model;
  const std::size_t b0 = chunk_first_[std::size_t(chunk)], b1 = chunk_first_[std::size_t(chunk) + 1];
  const Device dev = device();
  Tensor dx = Tensor::empty({N, C}, DType::f32, dev);
  if (has_loss(chunk)) {
    const std::int64_t Vl = head_->w.size(0);
    Tensor dl = Tensor::empty({N}, DType::f32), dlogits = Tensor::empty({N, Vl}, DType::f32, dev);
    std::fill_n(dl.data<float>(), N, static_cast<float>(ce_scale));
    if (dev != Device::cpu) dl = dl.to(dev);
    if (tp_.on()) vocab_parallel_ce_backward(dlogits, dl, saved_.logits, saved_.lse, saved_.targets, v0_);
    else ops::cross_entropy_backward(dlogits, dl, saved_.logits, saved_.targets);
    Tensor dxf = Tensor::empty({N, C}, DType::f32, dev);
    ops::matmul_backward(dxf, head_->g, dlogits, saved_.xf, head_->w);
    tp_.all_reduce(dxf);  // the vocabulary-split head's partial input gradients
    ops::rmsnorm_backward(dx, norm_->g, dxf, saved_.xs.back(), norm_->w, saved_.rf);
  } else {
    dx.copy_from(dout);  // (the loop below reuses dx as scratch)
  }
  Tensor dprev = Tensor::empty({N, C}, DType::f32, dev);
  for (std::size_t i = b1; i-- > b0;) {
    if (recompute_) {  // dprev: scratch for the output, overwritten next; the balance loss was counted
      if (!recompute_aux_.defined() || recompute_aux_.device() != dev)
        recompute_aux_ = Tensor::zeros({1}, DType::f64, dev);
      blocks_[i]->forward(dprev, saved_.xs[i - b0], B_, T_, recompute_aux_);
    }
    blocks_[i]->backward(dprev, dx, aux_scale);
    if (recompute_) blocks_[i]->release();
    std::swap(dx, dprev);
  }
  if (has_embedding(chunk)) ops::embedding_backward(embed_->g, dx, saved_.tokens, tp_.on());
  else din = dx;
}

}  // namespace moe
