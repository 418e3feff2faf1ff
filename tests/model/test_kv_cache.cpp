// Decoding with a KV cache (Transformer::decode) against the whole window recomputed: the
// logits after every token, read in a prefill and then one token at a time, equal the full
// forward's at each position, and greedy decoding picks the same tokens (GQA, and MLA with
// its compressed latent cache; MoE blocks).
#include <catch2/catch.hpp>

#include <algorithm>

#include "kernels/ops.h"
#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
ModelConfig model_config(AttentionType attention) {
  ModelConfig c;
  c.d_model = 16, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 8, c.ffn_hidden = 24, c.routed_experts = 8,
  c.top_k = 2, c.n_layers = 3, c.dense_layers = 1, c.vocab_size = 50, c.seq_len = 24, c.shared_experts = 1;
  c.attention = attention, c.q_lora_rank = 6;
  c.kv_lora_rank = 8, c.qk_nope_head_dim = 4, c.qk_rope_head_dim = 4, c.v_head_dim = 4;
  return c;
}
// The full forward's logits (T,V) of ids.
Tensor full_logits(Transformer& m, const std::vector<std::int32_t>& ids) {
  const auto T = static_cast<std::int64_t>(ids.size());
  m.forward(ints(ids), ints(std::vector<std::int32_t>(ids.size(), -1)), 1, T);
  return m.take_saved().head.logits;
}
std::int32_t argmax_row(const Tensor& logits, std::int64_t row) {
  const std::int64_t V = logits.size(1);
  const float* r = logits.data<float>() + row * V;
  return static_cast<std::int32_t>(std::max_element(r, r + V) - r);
}
}  // namespace

TEST_CASE("kv cache: decoding equals the whole window, position by position and greedily", "[model]") {
  for (const AttentionType attention : {AttentionType::gqa, AttentionType::mla}) {
    INFO((attention == AttentionType::gqa ? "gqa" : "mla"));
    Transformer m(model_config(attention));
    m.init(11);
    const Tensor r = random_ints({20}, 3, 2, 49);
    const std::vector<std::int32_t> ids(r.data<std::int32_t>(), r.data<std::int32_t>() + 20);
    const Tensor full = full_logits(m, ids);
    KvCache cache = m.new_cache(24);
    const Tensor prefill = m.decode(ints({ids.begin(), ids.begin() + 7}), cache);  // 7 at once
    CHECK(max_rel_err(prefill, full.rows(0, 7), 1e-6) < 1e-5);
    for (std::size_t t = 7; t < ids.size(); ++t) {  // then one at a time
      INFO("position " << t);
      const Tensor step = m.decode(ints({ids[t]}), cache);
      CHECK(max_rel_err(step, full.rows(static_cast<std::int64_t>(t), 1), 1e-6) < 1e-5);
    }
    CHECK(cache.length == 20);
    CHECK_THROWS_WITH(m.decode(ints({1, 2, 3, 4, 5}), cache), Catch::Contains("do not fit a cache of 24"));
    // Greedy from a 4-token prompt: the cache's choices are the recomputed window's.
    std::vector<std::int32_t> cached(ids.begin(), ids.begin() + 4), recomputed = cached;
    KvCache c2 = m.new_cache(24);
    Tensor logits = m.decode(ints(cached), c2);
    for (int i = 0; i < 12; ++i) {
      cached.push_back(argmax_row(logits, logits.size(0) - 1));
      logits = m.decode(ints({cached.back()}), c2);
      const Tensor window = full_logits(m, recomputed);
      recomputed.push_back(argmax_row(window, window.size(0) - 1));
    }
    CHECK(cached == recomputed);
  }
}
