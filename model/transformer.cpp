#include "model/transformer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <fmt/format.h>

#include <random>

#include "kernels/ops.h"
#include "model/lora.h"

namespace moe {
namespace {
// Whether token n + shift is still n's to read (MTP's depths): inside n's sequence of T and,
// with document positions (host, or null), inside n's document.
bool within_reach(std::int64_t n, std::int64_t shift, std::int64_t T, const std::int32_t* pos) {
  return n % T + shift < T && (!pos || pos[n + shift] == pos[n] + shift);
}
}  // namespace

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
    for (std::int64_t k = 1; k <= c.mtp_depth; ++k)
      mtp_.push_back(std::make_unique<MtpLayer>(c, k, shard.ep, tp_, Gemm(precision)));
    if (!mtp_.empty() && !embed_) {  // MTP looks tokens up on the last stage too
      embed_ = std::make_unique<Param>("model.embed_tokens.weight", Shape{tp_.part(V), c.d_model});
      tp_.split(*embed_, 0, V);
      embed_->tied_copy = true;
    }
  }
  layer_of_.push_back(L);
  if (c.lora.rank > 0)
    for (Param* p : params())
      if (std::any_of(c.lora.targets.begin(), c.lora.targets.end(),
                      [&](const std::string& t) { return lora_target_matches(t, p->name); }))
        p->lora = make_lora(*p, c.lora, tp_);
}

void Transformer::set_recompute(bool on) {
  recompute_ = on;
  for (auto& m : mtp_) m->set_recompute(on);
}

void Transformer::to(Device d) {
  for (Param* p : params()) {
    if (p->w.device() != d) p->w = p->w.to(d);
    if (p->g.defined() && p->g.device() != d) p->g = p->g.to(d);
  }
  for (MoE* m : moe_layers())
    if (m->bias().device() != d) m->bias() = m->bias().to(d);
  device_ = d;
}

bool Transformer::in_chunk(const MoE* layer, int chunk) const {
  for (std::size_t i = chunk_first_[std::size_t(chunk)]; i < chunk_first_[std::size_t(chunk) + 1]; ++i)
    if (blocks_[i]->moe() == layer) return true;
  if (has_loss(chunk))
    for (const auto& m : mtp_)
      if (m->block().moe() == layer) return true;
  return false;
}

std::vector<std::int64_t> Transformer::moe_ordinals() const {
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i]->moe()) out.push_back(layer_of_[i] - cfg_.dense_layers);
  for (std::size_t k = 0; k < mtp_.size(); ++k)  // the depths' blocks are layers n_layers + k
    if (mtp_[k]->block().moe()) out.push_back(cfg_.n_layers + std::int64_t(k) - cfg_.dense_layers);
  return out;
}

ParamList Transformer::params() {
  ParamList ps;
  const auto add = [&](Param* p) {
    ps.push_back(p);
    if (p->lora) ps.push_back(&p->lora->a), ps.push_back(&p->lora->b);
  };
  if (embed_) add(embed_.get());
  for (auto& b : blocks_)
    for (Param* p : b->params()) add(p);
  if (head_) add(norm_.get()), add(head_.get());
  for (auto& m : mtp_)
    for (Param* p : m->params()) add(p);
  return ps;
}

ParamList Transformer::adapters() {
  ParamList out;
  for (Param* p : params())
    if (p->lora) out.push_back(&p->lora->a), out.push_back(&p->lora->b);
  return out;
}

std::vector<MoE*> Transformer::moe_layers() {
  std::vector<MoE*> out;
  for (auto& b : blocks_)
    if (b->moe()) out.push_back(b->moe());
  for (auto& m : mtp_)
    if (m->block().moe()) out.push_back(m->block().moe());
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
    Param::Init init;
    bool ones;            // standard init without decay = norm weights
    std::int64_t fan_in;  // kaiming_uniform's
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
                        static_cast<std::uint64_t>(p->expert_begin + j), p->init, !p->decay, p->full_shape().back()});
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
    const auto bound = static_cast<float>(1.0 / std::sqrt(double(s.fan_in)));
    std::uniform_real_distribution<float> uniform(-bound, bound);
    for (std::int64_t i = 0; i < s.n; ++i)
      s.w[i] = s.init == Param::Init::zeros             ? 0.f
               : s.init == Param::Init::kaiming_uniform ? uniform(rng)
               : s.ones                                 ? 1.f
                                                        : normal(rng);
  }
  for (std::size_t i = 0; i < ps.size(); ++i)
    if (Param* p = ps[i]; p->is_split())
      p->w.copy_from(take_shard(values[i], p->split_dim, p->split_begin, p->w.size(p->split_dim)));
  for (MoE* m : moe_layers()) m->bias().zero();
}

Transformer::Loss Transformer::forward(const Tensor& tokens, const Tensor& targets, std::int64_t B, std::int64_t T,
                                       const Tensor& positions) {
  MOE_CHECK(has_embedding() && has_loss(), ConfigError, "Transformer::forward: this object holds one pipeline stage");
  Tensor unused;
  loss_totals().zero();  // fresh totals
  const Loss stage = forward_stage(unused, Tensor(), tokens, targets, Sequences{B, T, positions});
  Loss loss = take_loss_sums();
  loss.tokens = stage.tokens;
  return loss;
}

KvCache Transformer::new_cache(std::int64_t capacity) {
  KvCache c{0, capacity, {}};
  for (const auto& b : blocks_) c.layers.push_back(b->new_cache(capacity, device()));
  return c;
}

Tensor Transformer::decode(const Tensor& tokens, KvCache& cache) {
  const char* op = "Transformer::decode";
  MOE_CHECK(has_embedding() && has_loss() && chunks() == 1 && !tp_.on(), ConfigError,
            "{}: this object holds a part of the model; decoding needs all of it", op);
  const std::int64_t N = tokens.numel(), C = cfg_.d_model;
  MOE_CHECK(N > 0 && cache.length + N <= cache.capacity && cache.layers.size() == blocks_.size(), ConfigError,
            "{}: {} tokens after {} do not fit a cache of {}", op, N, cache.length, cache.capacity);
  const Device dev = device();
  Tensor x = Tensor::empty({N, C}, DType::f32, dev), y = Tensor::empty({N, C}, DType::f32, dev);
  ops::embedding_forward(x, embedding_rows(tokens, N, 0), embed_->w, false);
  Tensor aux = Tensor::zeros({1}, DType::f64, dev);  // (the balance loss: unused)
  for (std::size_t i = 0; i < blocks_.size(); ++i) {
    blocks_[i]->decode(y, x, cache.layers[i], cache.length, aux);
    std::swap(x, y);
  }
  cache.length += N;
  Tensor xf = Tensor::empty({N, C}, DType::f32, dev), rf = Tensor::empty({N}, DType::f32, dev),
         logits = Tensor::empty({N, head_->w.size(0)}, DType::f32, dev);
  ops::rmsnorm_forward(xf, rf, x, norm_->w, cfg_.norm_eps);
  ops::matmul_forward(logits, xf, head_->w);
  return logits;
}

Tensor& Transformer::loss_totals() {
  if (!loss_totals_.defined() || loss_totals_.device() != device())
    loss_totals_ = Tensor::zeros({3}, DType::f64, device());
  return loss_totals_;
}

Transformer::Loss Transformer::take_loss_sums() {
  if (!loss_totals_.defined()) return {};
  const Tensor sums = to_host(loss_totals_);  // (loss_totals_ itself on the CPU: read before the reset)
  const double* sum = sums.data<double>();
  const Loss loss{.ce_sum = sum[0], .aux_sum = sum[1], .mtp_sum = sum[2], .tokens = 0};
  loss_totals_.zero();
  return loss;
}

Transformer::Saved Transformer::take_saved(int chunk) {
  const std::size_t b0 = chunk_first_[std::size_t(chunk)], b1 = chunk_first_[std::size_t(chunk) + 1];
  Saved s = std::exchange(saved_, Saved{});
  s.blocks.resize(b1 - b0);
  for (std::size_t i = b0; i < b1; ++i) blocks_[i]->swap_saved(s.blocks[i - b0]);
  if (has_loss(chunk)) {
    s.mtp_layers.resize(mtp_.size());
    for (std::size_t k = 0; k < mtp_.size(); ++k) mtp_[k]->swap_saved(s.mtp_layers[k]);
  }
  return s;
}

void Transformer::restore_saved(Saved s, int chunk) {
  const std::size_t b0 = chunk_first_[std::size_t(chunk)];
  for (std::size_t i = 0; i < s.blocks.size(); ++i) blocks_[b0 + i]->swap_saved(s.blocks[i]);
  for (std::size_t k = 0; k < s.mtp_layers.size(); ++k) mtp_[k]->swap_saved(s.mtp_layers[k]);
  s.blocks.clear(), s.mtp_layers.clear();  // (the layers' parts live in the layers)
  saved_ = std::move(s);
}

void Transformer::backward(double ce_scale, double aux_scale) {
  Tensor unused;
  backward_stage(unused, Tensor(), ce_scale, aux_scale);
}

Tensor Transformer::embedding_rows(const Tensor& ids, std::int64_t T, std::int64_t shift,
                                   const std::int32_t* pos) const {
  const Device dev = device();
  const char* op = "Transformer::forward";
  if (!tp_.on() && shift == 0) {  // the ids themselves
    if (ids.device() == dev) return ids;
    expect_ids(op, "token", ids, 0, cfg_.vocab_size);  // (the ops check no device ids)
    return ids.to(dev);
  }
  const Tensor host = to_host(ids);
  expect_ids(op, "token", host, 0, cfg_.vocab_size);
  const std::int64_t N = host.numel(), Vl = embed_->w.size(0);
  Tensor rows = Tensor::empty({N}, DType::i32);
  const std::int32_t* in = host.data<std::int32_t>();
  std::int32_t* out = rows.data<std::int32_t>();
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int64_t t = within_reach(n, shift, T, pos) ? in[n + shift] : -1;
    out[n] = t >= v0_ && t < v0_ + Vl ? static_cast<std::int32_t>(t - v0_) : -1;
  }
  return dev == Device::cpu ? rows : rows.to(dev);
}

void Transformer::head_forward(HeadSaved& s, const Tensor& xf, Tensor& total) {
  const std::int64_t N = xf.size(0), Vl = head_->w.size(0);
  const Device dev = xf.device();
  s.logits = Tensor::empty({N, Vl}, DType::f32, dev);
  ops::matmul_forward(s.logits, xf, head_->w);
  Tensor losses = Tensor::empty({N}, DType::f32, dev);
  if (tp_.on()) {
    s.lse = Tensor::empty({N}, DType::f32);
    vocab_parallel_ce_forward(losses, s.lse, s.logits, s.targets, v0_, tp_);
  } else {
    ops::cross_entropy_forward(losses, s.logits, s.targets);
  }
  ops::sum_into(total, losses);  // read once per step (take_loss_sums), not per micro-batch
}

void Transformer::head_backward(Tensor& dxf, const HeadSaved& s, const Tensor& xf, double scale) {
  const std::int64_t N = xf.size(0), Vl = head_->w.size(0);
  const Device dev = xf.device();
  Tensor dl = Tensor::empty({N}, DType::f32), dlogits = Tensor::empty({N, Vl}, DType::f32, dev);
  std::fill_n(dl.data<float>(), N, static_cast<float>(scale));
  if (dev != Device::cpu) dl = dl.to(dev);
  if (tp_.on()) vocab_parallel_ce_backward(dlogits, dl, s.logits, s.lse, s.targets, v0_);
  else ops::cross_entropy_backward(dlogits, dl, s.logits, s.targets);
  ops::matmul_backward(dxf, head_->g, dlogits, xf, head_->w);
  tp_.all_reduce(dxf);  // the vocabulary-split head's partial input gradients
}

Transformer::Loss Transformer::forward_stage(Tensor& out, const Tensor& in, const Tensor& tokens, const Tensor& targets,
                                             const Sequences& seq, int chunk) {
  const std::int64_t B = seq.B, T = seq.T, N = B * T, C = cfg_.d_model;
  const std::size_t b0 = chunk_first_[std::size_t(chunk)], b1 = chunk_first_[std::size_t(chunk) + 1];
  const Device dev = device();
  Loss loss;
  saved_.seq = {B, T, Tensor()};
  if (seq.positions.defined()) {  // from the loader (host): checked there, then to the device
    if (seq.positions.device() != dev) expect_positions("Transformer::forward", seq.positions, B, T, Device::cpu);
    saved_.seq.positions = seq.positions.device() == dev ? seq.positions : seq.positions.to(dev);
  }
  if (has_embedding(chunk)) {
    // Vocabulary-parallel lookup: rows held elsewhere read as zeros, then the sum over tp.
    // Token ids come from the host (the data loader) and go to the model's device.
    saved_.tokens = embedding_rows(tokens, T, 0);
    saved_.xs.assign(1, Tensor::empty({N, C}, DType::f32, dev));
    ops::embedding_forward(saved_.xs[0], saved_.tokens, embed_->w, tp_.on());
    tp_.all_reduce(saved_.xs[0]);
  } else {
    saved_.xs.assign(1, in.device() == dev ? in : in.to(dev));
  }
  for (std::size_t i = b0; i < b1; ++i) {
    saved_.xs.push_back(Tensor::empty({N, C}, DType::f32, dev));
    Tensor aux = loss_totals().rows(1, 1);
    blocks_[i]->forward(saved_.xs.back(), saved_.xs[saved_.xs.size() - 2], saved_.seq, aux);
    if (recompute_) blocks_[i]->release();
  }
  if (!has_loss(chunk)) {
    out = saved_.xs.back();
    return loss;
  }
  if (targets.device() != dev) expect_ids("Transformer::forward", "target", targets, -1, cfg_.vocab_size);
  saved_.head.targets = targets.device() == dev ? targets : targets.to(dev);
  saved_.xf = Tensor::empty({N, C}, DType::f32, dev), saved_.rf = Tensor::empty({N}, DType::f32, dev);
  ops::rmsnorm_forward(saved_.xf, saved_.rf, saved_.xs.back(), norm_->w, cfg_.norm_eps);
  Tensor ce = loss_totals().rows(0, 1);
  head_forward(saved_.head, saved_.xf, ce);
  if (!mtp_.empty()) mtp_forward(tokens, targets, seq.positions);
  const Tensor tg = to_host(targets);  // the loader's host tensor: no copy
  for (std::int64_t n = 0; n < N; ++n) loss.tokens += tg.data<std::int32_t>()[n] >= 0;
  return loss;
}

// Depth k: the tokens and targets k places ahead, through MtpLayer k from the previous
// depth's head input, into the shared head.
void Transformer::mtp_forward(const Tensor& tokens, const Tensor& targets, const Tensor& positions) {
  const std::int64_t T = saved_.seq.T, N = saved_.seq.B * T, C = cfg_.d_model;
  const Device dev = device();
  const Tensor tg = to_host(targets), pos_host = positions.defined() ? to_host(positions) : Tensor();
  const std::int32_t* pos = pos_host.defined() ? pos_host.data<std::int32_t>() : nullptr;
  // Position n's depth-k target is the token k + 1 ahead, where within_reach (a later
  // document's tokens are not n's to predict).
  Tensor total = loss_totals().rows(2, 1), aux = loss_totals().rows(1, 1);
  saved_.mtp.assign(mtp_.size(), MtpSaved{});
  for (std::size_t k = 0; k < mtp_.size(); ++k) {
    const std::int64_t shift = std::int64_t(k) + 1;
    MtpSaved& s = saved_.mtp[k];
    s.tokens = embedding_rows(tokens, T, shift, pos);
    Tensor shifted = Tensor::empty({N}, DType::i32);
    for (std::int64_t n = 0; n < N; ++n)
      shifted.data<std::int32_t>()[n] = within_reach(n, shift, T, pos) ? tg.data<std::int32_t>()[n + shift] : -1;
    s.head.targets = dev == Device::cpu ? shifted : shifted.to(dev);
    Tensor emb = Tensor::empty({N, C}, DType::f32, dev);
    ops::embedding_forward(emb, s.tokens, embed_->w, true);  // -1 (past the end, or elsewhere under tp): zeros
    tp_.all_reduce(emb);
    s.out = Tensor::empty({N, C}, DType::f32, dev);
    mtp_[k]->forward(s.out, k == 0 ? saved_.xf : saved_.mtp[k - 1].out, emb, saved_.seq, aux);
    head_forward(s.head, s.out, total);
  }
}

// Deepest first: depth k's output gets its head's gradient and depth k+1's through its h.
void Transformer::mtp_backward(Tensor& dxf, double scale, double aux_scale) {
  const std::int64_t N = dxf.size(0), C = dxf.size(1);
  const Device dev = dxf.device();
  Tensor dnext;  // the gradient of depth k's output through depth k + 1
  for (std::size_t k = mtp_.size(); k-- > 0;) {
    const MtpSaved& s = saved_.mtp[k];
    Tensor dout = Tensor::empty({N, C}, DType::f32, dev), dh = Tensor::empty({N, C}, DType::f32, dev),
           demb = Tensor::empty({N, C}, DType::f32, dev);
    head_backward(dout, s.head, s.out, scale);
    if (dnext.defined()) ops::accumulate(dout, dnext);
    mtp_[k]->backward(dh, demb, dout, aux_scale);
    if (embed_->g.defined()) ops::embedding_backward(embed_->g, demb, s.tokens, true);  // (undefined: frozen)
    dnext = std::move(dh);
  }
  ops::accumulate(dxf, dnext);
}

void Transformer::backward_stage(Tensor& din, const Tensor& dout, double ce_scale, double aux_scale, int chunk) {
  const std::int64_t N = saved_.xs[0].size(0), C = cfg_.d_model;
  const std::size_t b0 = chunk_first_[std::size_t(chunk)], b1 = chunk_first_[std::size_t(chunk) + 1];
  const Device dev = device();
  Tensor dx = Tensor::empty({N, C}, DType::f32, dev);
  if (has_loss(chunk)) {
    Tensor dxf = Tensor::empty({N, C}, DType::f32, dev);
    head_backward(dxf, saved_.head, saved_.xf, ce_scale);
    if (!mtp_.empty()) mtp_backward(dxf, ce_scale * mtp_weight_ / double(mtp_.size()), aux_scale);
    ops::rmsnorm_backward(dx, norm_->g, dxf, saved_.xs.back(), norm_->w, saved_.rf);
  } else {
    dx.copy_from(dout);  // (onto this stage's device)
  }
  // Each block's input gradient in a fresh buffer, never one a later block writes: a block's
  // weight gradients may be computed later from its output gradient (WeightGrads).
  for (std::size_t i = b1; i-- > b0;) {
    Tensor dprev = Tensor::empty({N, C}, DType::f32, dev);
    if (recompute_) {  // dprev: scratch for the output, overwritten next; the balance loss was counted
      if (!recompute_aux_.defined() || recompute_aux_.device() != dev)
        recompute_aux_ = Tensor::zeros({1}, DType::f64, dev);
      blocks_[i]->forward(dprev, saved_.xs[i - b0], saved_.seq, recompute_aux_);
    }
    blocks_[i]->backward(dprev, dx, aux_scale);
    if (recompute_) blocks_[i]->release();
    dx = std::move(dprev);
  }
  if (has_embedding(chunk) && embed_->g.defined()) ops::embedding_backward(embed_->g, dx, saved_.tokens, tp_.on());
  else din = dx;
}

}  // namespace moe
