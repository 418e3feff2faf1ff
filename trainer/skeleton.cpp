#include "trainer/skeleton.h"

#include <chrono>
#include <cmath>
#include <random>

#include <spdlog/spdlog.h>

#include "data/corpus.h"
#include "kernels/ops.h"

namespace moe {
namespace {

constexpr DType f32 = DType::f32;

// One parameter with its gradient and AdamW moments.
struct Param {
  Tensor w, g, m, v;
  explicit Param(Shape s) : w(Tensor::empty(s, f32)), g(Tensor::zeros(s, f32)), m(Tensor::zeros(s, f32)), v(Tensor::zeros(s, f32)) {}
};

void fill_normal(Tensor& t, std::mt19937_64& rng, double std) {
  std::normal_distribution<float> d(0.f, static_cast<float>(std));
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
}
void fill(Tensor& t, float x) { std::fill_n(t.data<float>(), t.numel(), x); }
void add_into(Tensor& y, const Tensor& x) {  // y += x
  for (std::int64_t i = 0; i < y.numel(); ++i) y.data<float>()[i] += x.data<float>()[i];
}

// Token stream: the bytes of each document followed by an end-of-document token.
std::vector<std::int32_t> tokenize(const std::vector<std::string>& docs, std::size_t begin, std::size_t end,
                                   std::int32_t eod) {
  std::vector<std::int32_t> out;
  for (std::size_t d = begin; d < end; ++d) {
    for (unsigned char ch : docs[d]) out.push_back(ch);
    out.push_back(eod);
  }
  return out;
}

// Sequence j of step s starts at a position fixed by (seed, s, j) alone, so the global batch
// is the same whatever the number of ranks; rank r takes sequences [r*mb, (r+1)*mb).
std::int64_t window_start(std::uint64_t seed, std::int64_t step, std::int64_t j, std::int64_t range) {
  std::mt19937_64 rng(seed ^ (0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(step + 1)) ^
                      (0xBF58476D1CE4E5B9ull * static_cast<std::uint64_t>(j + 1)));
  return static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(range));
}

class ByteLM {
 public:
  ByteLM(const ModelConfig& m, std::uint64_t seed)
      : V(m.vocab_size), C(m.d_model), F(m.ffn_hidden), eps(m.norm_eps),
        emb({V, C}), norm1({C}), gate({F, C}), up({F, C}), down({C, F}), normf({C}), head({V, C}) {
    std::mt19937_64 rng(seed);
    for (Param* p : {&emb, &gate, &up, &down, &head}) fill_normal(p->w, rng, m.init_std);
    fill(norm1.w, 1.f);
    fill(normf.w, 1.f);
  }
  std::vector<Param*> params() { return {&emb, &norm1, &gate, &up, &down, &normf, &head}; }

  // Sum of token losses / scale; gradients accumulate into Param::g (scaled by 1/scale).
  double step(const Tensor& tok, const Tensor& tgt, double scale, bool backward) {
    const std::int64_t N = tok.numel();
    Tensor x0 = T({N, C}), h1 = T({N, C}), r1 = T({N}), g = T({N, F}), u = T({N, F}), a = T({N, F}), x1 = T({N, C}),
           h2 = T({N, C}), r2 = T({N}), logits = T({N, V}), losses = T({N});
    ops::embedding_forward(x0, tok, emb.w);                          // (N,C)
    ops::rmsnorm_forward(h1, r1, x0, norm1.w, eps);
    ops::matmul_forward(g, h1, gate.w);                              // (N,F)
    ops::matmul_forward(u, h1, up.w);
    ops::swiglu_forward(a, g, u);
    ops::matmul_forward(x1, a, down.w);                              // (N,C)
    add_into(x1, x0);                                                // residual
    ops::rmsnorm_forward(h2, r2, x1, normf.w, eps);
    ops::matmul_forward(logits, h2, head.w);                         // (N,V)
    ops::cross_entropy_forward(losses, logits, tgt);
    double sum = 0;
    for (std::int64_t n = 0; n < N; ++n) sum += losses.data<float>()[n];
    if (!backward) return sum / scale;

    Tensor dl = T({N}), dlogits = T({N, V}), dh2 = T({N, C}), dx1 = T({N, C}), da = T({N, F}), dg = T({N, F}),
           du = T({N, F}), dh1 = T({N, C}), dh1u = T({N, C}), dx0 = T({N, C});
    fill(dl, static_cast<float>(1.0 / scale));
    ops::cross_entropy_backward(dlogits, dl, logits, tgt);
    ops::matmul_backward(dh2, head.g, dlogits, h2, head.w);
    ops::rmsnorm_backward(dx1, normf.g, dh2, x1, normf.w, r2);
    ops::matmul_backward(da, down.g, dx1, a, down.w);
    ops::swiglu_backward(dg, du, da, g, u);
    ops::matmul_backward(dh1, gate.g, dg, h1, gate.w);
    ops::matmul_backward(dh1u, up.g, du, h1, up.w);
    add_into(dh1, dh1u);
    ops::rmsnorm_backward(dx0, norm1.g, dh1, x0, norm1.w, r1);
    add_into(dx0, dx1);                                              // residual
    ops::embedding_backward(emb.g, dx0, tok);
    return sum / scale;
  }

 private:
  static Tensor T(Shape s) { return Tensor::empty(std::move(s), f32); }
  std::int64_t V, C, F;
  double eps;
  Param emb, norm1, gate, up, down, normf, head;
};

double learning_rate(const TrainConfig& t, std::int64_t step) {  // step is 0-based
  if (step < t.warmup_steps) return t.lr * static_cast<double>(step + 1) / static_cast<double>(t.warmup_steps);
  const double span = static_cast<double>(std::max<std::int64_t>(1, t.steps - t.warmup_steps));
  const double p = std::min(1.0, static_cast<double>(step - t.warmup_steps) / span);
  switch (t.lr_schedule) {
    case LrSchedule::constant: return t.lr;
    case LrSchedule::linear: return t.lr + (t.min_lr - t.lr) * p;
    case LrSchedule::cosine: return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1 + std::cos(M_PI * p));
  }
  return t.lr;
}

// Fills tokens/targets for `count` windows of length T starting at sequence `first`.
void load_batch(Tensor& tok, Tensor& tgt, const std::vector<std::int32_t>& stream, std::uint64_t seed,
                std::int64_t step, std::int64_t first, std::int64_t count, std::int64_t T) {
  const auto range = static_cast<std::int64_t>(stream.size()) - T;
  for (std::int64_t j = 0; j < count; ++j) {
    const std::int64_t s = window_start(seed, step, first + j, range);
    for (std::int64_t t = 0; t < T; ++t) {
      tok.data<std::int32_t>()[j * T + t] = stream[static_cast<std::size_t>(s + t)];
      tgt.data<std::int32_t>()[j * T + t] = stream[static_cast<std::size_t>(s + t + 1)];
    }
  }
}

}  // namespace

RunSummary train_skeleton(const Config& cfg, Communicator& world) {
  const auto& m = cfg.model;
  const auto& t = cfg.train;
  MOE_CHECK(m.vocab_size >= 257, ConfigError,
            "{}: model.vocab_size: {} is too small for the byte-level skeleton model (needs 256 bytes + end-of-document = 257)",
            cfg.source, m.vocab_size);
  const std::int64_t dp = world.size(), T = m.seq_len, mb = t.micro_batch;
  const auto docs = data::read_documents(cfg.data.corpus);
  const auto n_val = static_cast<std::size_t>(static_cast<double>(docs.size()) * cfg.data.val_fraction);
  const auto eod = static_cast<std::int32_t>(m.vocab_size - 1);
  const auto train = tokenize(docs, 0, docs.size() - n_val, eod), val = tokenize(docs, docs.size() - n_val, docs.size(), eod);
  MOE_CHECK(static_cast<std::int64_t>(train.size()) > T + 1 && (n_val == 0 || static_cast<std::int64_t>(val.size()) > T + 1),
            DataError, "{}: corpus too small for model.seq_len = {}", cfg.data.corpus, T);
  if (world.rank() == 0)
    spdlog::info("corpus {}: {} documents, {} train / {} validation tokens; {} ranks x {} x {} x {} tokens per step",
                 cfg.data.corpus, docs.size(), train.size(), val.size(), dp, t.grad_accum, mb, T);

  ByteLM model(m, static_cast<std::uint64_t>(t.seed));  // same seed: identical replicas
  const double global_tokens = static_cast<double>(dp * t.grad_accum * mb * T);
  Tensor tok = Tensor::empty({mb * T}, DType::i32), tgt = Tensor::empty({mb * T}, DType::i32);
  RunSummary sum;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t step = 0; step < t.steps; ++step) {
    for (Param* p : model.params()) p->g.zero();
    double loss = 0;
    for (std::int64_t k = 0; k < t.grad_accum; ++k) {
      const std::int64_t first = (k * dp + world.rank()) * mb;
      load_batch(tok, tgt, train, static_cast<std::uint64_t>(t.seed), step, first, mb, T);
      loss += model.step(tok, tgt, global_tokens, true);
    }
    loss = world.all_reduce_sum(loss);
    double norm2 = 0;
    for (Param* p : model.params()) {
      world.all_reduce_sum(p->g);
      for (std::int64_t i = 0; i < p->g.numel(); ++i) norm2 += double(p->g.data<float>()[i]) * p->g.data<float>()[i];
    }
    const double norm = std::sqrt(norm2), clip = t.grad_clip > 0 && norm > t.grad_clip ? t.grad_clip / norm : 1.0;
    const ops::AdamWSpec spec{.lr = learning_rate(t, step), .beta1 = t.beta1, .beta2 = t.beta2, .eps = t.adam_eps,
                              .weight_decay = t.weight_decay, .step = step + 1};
    for (Param* p : model.params()) {
      if (clip != 1.0) for (std::int64_t i = 0; i < p->g.numel(); ++i) p->g.data<float>()[i] *= static_cast<float>(clip);
      ops::adamw_step(p->w, p->m, p->v, p->g, spec);
    }
    if (step == 0) sum.first_loss = loss;
    sum.last_loss = loss;
    sum.tokens += global_tokens;
    sum.steps = step + 1;
    if (world.rank() == 0 && ((step + 1) % t.log_every == 0 || step == 0 || step + 1 == t.steps)) {
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      spdlog::info("step {:>5}/{} | loss {:.4f} | lr {:.2e} | grad norm {:.3f} | {:.0f} tokens/s", step + 1, t.steps, loss,
                   spec.lr, norm, sum.tokens / secs);
    }
  }
  sum.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // Validation: the same held-out windows whatever the layout (seed + 1, batches 0..3).
  if (n_val > 0) {
    constexpr std::int64_t kValBatches = 4;
    double vl = 0;
    for (std::int64_t k = 0; k < kValBatches; ++k) {
      load_batch(tok, tgt, val, static_cast<std::uint64_t>(t.seed) + 1, k, world.rank() * mb, mb, T);
      vl += model.step(tok, tgt, static_cast<double>(kValBatches * dp * mb * T), false);
    }
    sum.val_loss = world.all_reduce_sum(vl);
  }
  return sum;
}

}  // namespace moe
