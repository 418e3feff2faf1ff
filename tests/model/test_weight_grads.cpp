// The zero-bubble split (model/linear.h WeightGrads): a backward that leaves its weight
// gradients for later, run after another micro-batch's backward, gives every gradient and
// input gradient of the plain backward, bit for bit, in each precision and with each part
// that has GEMMs of its own (GQA and MLA, dense FFN, shared and routed experts, MTP, LoRA,
// recomputation). The weight gradients are really left: before the queue runs they are zero.
#include <catch2/catch.hpp>

#include <cstring>
#include <optional>
#include <string>

#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;

namespace {
ModelConfig small_model(AttentionType attention) {
  ModelConfig c;
  c.d_model = 16, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 8, c.ffn_hidden = 24, c.routed_experts = 4,
  c.shared_experts = 1, c.top_k = 2, c.n_layers = 2, c.dense_layers = 1, c.vocab_size = 40, c.seq_len = 8,
  c.mtp_depth = 1, c.attention = attention, c.aux_loss_coef = 0.01;
  if (attention == AttentionType::mla)
    c.q_lora_rank = 8, c.kv_lora_rank = 8, c.qk_nope_head_dim = 4, c.qk_rope_head_dim = 4, c.v_head_dim = 4;
  return c;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

bool all_zero(const Tensor& t) {
  const Tensor h = t.to(Device::cpu);
  const auto* p = static_cast<const unsigned char*>(h.raw());
  for (std::size_t i = 0; i < h.nbytes(); ++i)
    if (p[i] != 0) return false;
  return true;
}

struct Run {
  std::vector<Tensor> grads;      // every parameter's, in params() order
  std::size_t deferred_zero = 0;  // of them, still zero once both input backwards have run
};

// Two micro-batches forward, then both backward (the second's before the first's weight
// gradients when split), then the queued weight gradients in order.
Run two_micro_batches(const ModelConfig& c, Precision precision, bool recompute, bool split) {
  const std::int64_t B = 2, T = 8;
  Transformer model(c, {}, precision);
  model.init(7);
  model.set_recompute(recompute);
  std::uint64_t seed = 11;
  for (Param* f : model.adapters())  // B starts at zero: make the adapters' path matter
    if (f->name.find("lora_B") != std::string::npos)
      f->w.copy_from(testing::random(f->shape(), seed++, 0.05, DType::f32));
  Transformer::Saved saved[2];
  for (int i = 0; i < 2; ++i) {
    const Tensor tokens = testing::random_ints({B * T}, 1 + i, 0, 39),
                 targets = testing::random_ints({B * T}, 3 + i, 0, 39);
    Tensor out;
    model.forward_stage(out, Tensor(), tokens, targets, {B, T, Tensor()});
    saved[i] = model.take_saved();
  }
  WeightGrads later[2];
  for (int i = 0; i < 2; ++i) {
    model.restore_saved(std::move(saved[i]));
    Tensor din;
    {
      std::optional<WeightGrads::Deferral> defer;
      if (split) defer.emplace(later[i]);
      model.backward_stage(din, Tensor(), 1.0 / double(B * T), 1.0 / double(B));
    }
    model.take_saved();
    if (split) CHECK_FALSE(later[i].empty());
  }
  Run r;
  for (Param* p : model.params())
    if (p->g.defined()) r.deferred_zero += all_zero(p->g);
  for (auto& w : later) w.run();
  for (Param* p : model.params())
    if (p->g.defined()) r.grads.push_back(p->g.to(Device::cpu));
  return r;
}
}  // namespace

TEST_CASE("weight gradients split off: the same gradients bit for bit, computed later", "[model]") {
  const auto attention = GENERATE(AttentionType::gqa, AttentionType::mla);
  const auto precision = GENERATE(Precision::fp32, Precision::bf16, Precision::fp8);
  const bool recompute = GENERATE(false, true);
  const bool lora = GENERATE(false, true);
  ModelConfig c = small_model(attention);
  if (lora) c.lora = {.rank = 2, .alpha = 3.0, .targets = {"all-linear"}};
  INFO((attention == AttentionType::mla ? "mla" : "gqa")
       << ", precision " << int(precision) << (recompute ? ", recompute" : "") << (lora ? ", lora" : ""));
  const Run plain = two_micro_batches(c, precision, recompute, false);
  const Run split = two_micro_batches(c, precision, recompute, true);
  REQUIRE(plain.grads.size() == split.grads.size());
  for (std::size_t i = 0; i < plain.grads.size(); ++i) {
    INFO("parameter " << i);
    CHECK(same_bits(plain.grads[i], split.grads[i]));
  }
  // Every GEMM weight's gradient waited (LoRA: the adapters' A; B is computed with dx).
  CHECK(split.deferred_zero > plain.deferred_zero + (lora ? 8u : 12u));
}
