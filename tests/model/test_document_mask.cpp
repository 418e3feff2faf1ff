// Document masking and loss masks (data.document_mask, chat data): a packed sequence whose
// documents are masked from each other trains exactly as the documents run one by one, and a
// masked target contributes nothing. The oracle is the same model on the separate documents.
#include <catch2/catch.hpp>

#include <numeric>

#include "kernels/ops.h"
#include "model/transformer.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {
// q/k/v of one sequence's rows [t0, t0 + n) of a (1,T,H,D) tensor, as their own (1,n,H,D).
Tensor rows_of(const Tensor& x, std::int64_t t0, std::int64_t n) {
  const std::int64_t H = x.size(2), D = x.size(3);
  return x.view({x.size(1), H * D}).rows(t0, n).view({1, n, H, D});
}
Tensor positions_of(const std::vector<std::int64_t>& lengths) {
  std::vector<std::int32_t> p;
  for (std::int64_t n : lengths)
    for (std::int64_t i = 0; i < n; ++i) p.push_back(static_cast<std::int32_t>(i));
  return ints(p);
}
}  // namespace

TEST_CASE("document mask: packed RoPE + attention equals each document alone (GQA, both forms)", "[ops][attention]") {
  const std::vector<std::int64_t> docs = {3, 5, 1, 4};
  const std::int64_t T = 13, H = 4, Hkv = 2, D = 6;
  const Tensor pos = positions_of(docs);
  Tensor q = random({1, T, H, D}, 1), k = random({1, T, Hkv, D}, 2), v = random({1, T, Hkv, D}, 3);
  for (Tensor* x : {&q, &k}) ops::rope_forward(*x, *x, 10000.0, ops::RopePairs::half, {}, pos);
  Tensor out = Tensor::empty(q.shape(), DType::f64), probs = Tensor::empty({1, H, T, T}, DType::f64);
  Tensor out_lse = Tensor::empty(q.shape(), DType::f64), lse = Tensor::empty({1, H, T}, DType::f64);
  ops::attention_forward(out, probs, q, k, v, pos);
  ops::attention_lse_forward(out_lse, lse, q, k, v, pos);
  CHECK(max_rel_err(out_lse, out) < 1e-14);
  // The oracle: each document alone, rotated from position 0 by the plain op.
  Tensor q0 = random({1, T, H, D}, 1), k0 = random({1, T, Hkv, D}, 2);
  std::int64_t t0 = 0;
  for (std::int64_t n : docs) {
    auto alone = [&](const Tensor& x) {  // rows [t0, t0 + n) in storage of their own
      Tensor y = Tensor::empty({1, n, x.size(2), x.size(3)}, DType::f64);
      y.copy_from(rows_of(x, t0, n));
      return y;
    };
    Tensor qd = alone(q0), kd = alone(k0), vd = alone(v);
    ops::rope_forward(qd, qd, 10000.0);
    ops::rope_forward(kd, kd, 10000.0);
    Tensor od = Tensor::empty(qd.shape(), DType::f64), pd = Tensor::empty({1, H, n, n}, DType::f64);
    ops::attention_forward(od, pd, qd, kd, vd);
    CHECK(max_rel_err(rows_of(out, t0, n), od) < 1e-14);
    t0 += n;
  }
  // Backward: the masked probabilities carry no gradient across documents, and the fused
  // form rebuilds the same probabilities from its log-sum-exp.
  const Tensor dout = random(q.shape(), 4);
  Tensor dq = Tensor::empty(q.shape(), DType::f64), dk = Tensor::empty(k.shape(), DType::f64),
         dv = Tensor::empty(v.shape(), DType::f64);
  Tensor dq2 = Tensor::empty(q.shape(), DType::f64), dk2 = Tensor::empty(k.shape(), DType::f64),
         dv2 = Tensor::empty(v.shape(), DType::f64);
  ops::attention_backward(dq, dk, dv, dout, q, k, v, probs);
  ops::attention_lse_backward(dq2, dk2, dv2, dout, q, k, v, out_lse, lse, pos);
  CHECK(max_rel_err(dq2, dq) < 1e-12);
  CHECK(max_rel_err(dk2, dk) < 1e-12);
  CHECK(max_rel_err(dv2, dv) < 1e-12);
  // A key of document 2 gets no gradient from document 3's queries: perturbing document 3's
  // output gradient leaves document 2's key gradients as they were.
  Tensor dout3 = Tensor::empty(dout.shape(), DType::f64);
  dout3.copy_from(dout);
  for (std::int64_t i = 9 * H * D; i < T * H * D; ++i) dout3.data<double>()[i] += 1.0;
  ops::attention_backward(dq2, dk2, dv2, dout3, q, k, v, probs);
  CHECK(max_rel_err(rows_of(dk2, 3, 5), rows_of(dk, 3, 5)) == 0.0);
}

TEST_CASE("document mask: positions that do not restart or grow by one are refused", "[ops][attention]") {
  Tensor q = random({1, 4, 2, 4}, 1), out = Tensor::empty(q.shape(), DType::f64),
         probs = Tensor::empty({1, 2, 4, 4}, DType::f64);
  CHECK_THROWS_WITH(ops::attention_forward(out, probs, q, q, q, ints({1, 2, 3, 4})),
                    Catch::Contains("position 1 at token 0 of sequence 0"));
  CHECK_THROWS_WITH(ops::rope_forward(q, q, 1e4, ops::RopePairs::half, {}, ints({0, 1, 3, 0})),
                    Catch::Contains("position 3 at token 2"));
}

namespace {
ModelConfig small_model(AttentionType attention) {
  ModelConfig c;
  c.d_model = 16, c.n_heads = 4, c.n_kv_heads = 2, c.expert_hidden = 8, c.ffn_hidden = 24, c.routed_experts = 8,
  c.top_k = 2, c.n_layers = 3, c.dense_layers = 1, c.vocab_size = 50, c.seq_len = 16, c.shared_experts = 1;
  c.attention = attention;
  c.kv_lora_rank = 8, c.qk_nope_head_dim = 4, c.qk_rope_head_dim = 4, c.v_head_dim = 4;
  c.mtp_depth = 2;  // its targets k ahead stay inside their document
  return c;         // no balance loss (it is sequence-wise) and no capacity (it is per batch): per-token routing
}

struct Run {
  double ce = 0, mtp = 0;
  std::int64_t tokens = 0;
  std::vector<Tensor> grads;
};
// ce_sum and every gradient of d(ce_sum), summed over calls.
void add_run(Transformer& m, Run& r, const Tensor& tokens, const Tensor& targets, std::int64_t T,
             const Tensor& positions = Tensor()) {
  for (Param* p : m.params()) p->g.zero();
  const auto loss = m.forward(tokens, targets, 1, T, positions);
  m.backward(1.0, 0.0);
  r.ce += loss.ce_sum, r.mtp += loss.mtp_sum, r.tokens += loss.tokens;
  const auto ps = m.params();
  if (r.grads.empty())
    for (Param* p : ps) r.grads.push_back(Tensor::zeros(p->g.shape(), DType::f32));
  for (std::size_t i = 0; i < ps.size(); ++i) ops::accumulate(r.grads[i], ps[i]->g);
}
void check_equal(const Run& a, const Run& b, double tol) {
  CHECK(a.tokens == b.tokens);
  CHECK(a.ce == Approx(b.ce).epsilon(tol));
  CHECK(a.mtp == Approx(b.mtp).epsilon(tol));
  REQUIRE(a.grads.size() == b.grads.size());
  for (std::size_t i = 0; i < a.grads.size(); ++i) {
    INFO("parameter " << i);
    CHECK(max_rel_err(a.grads[i], b.grads[i], 1e-6) < tol);
  }
}
}  // namespace

TEST_CASE("document mask: a packed sequence trains as its documents one by one (GQA and MLA, MoE, MTP)", "[model]") {
  for (const AttentionType attention : {AttentionType::gqa, AttentionType::mla}) {
    INFO((attention == AttentionType::gqa ? "gqa" : "mla"));
    Transformer m(small_model(attention));
    m.init(5);
    // Three documents, each ending with end-of-document (1); the last is cut by the window.
    const std::vector<std::int64_t> docs = {5, 7, 4};
    const std::int64_t T = 16;
    std::vector<std::int32_t> tok(T), tgt(T);
    const Tensor ids = random_ints({T + 1}, 9, 2, 49);
    std::int64_t t0 = 0;
    for (std::int64_t n : docs) {
      for (std::int64_t i = 0; i < n; ++i) tok[t0 + i] = ids.data<std::int32_t>()[t0 + i];
      if (t0 + n < T) tok[t0 + n - 1] = 1;  // (the last runs past the window)
      t0 += n;
    }
    for (std::int64_t t = 0; t < T; ++t) tgt[t] = tok[t] == 1 ? -1 : (t + 1 < T ? tok[t + 1] : 7);
    Run packed, alone;
    add_run(m, packed, ints(tok), ints(tgt), T, positions_of(docs));
    t0 = 0;
    for (std::int64_t n : docs) {
      const std::vector<std::int32_t> dt(tok.begin() + t0, tok.begin() + t0 + n),
          dg(tgt.begin() + t0, tgt.begin() + t0 + n);
      add_run(m, alone, ints(dt), ints(dg), n);
      t0 += n;
    }
    check_equal(packed, alone, 1e-6);
    // Without the mask the documents see each other: the oracle can tell.
    Run unmasked;
    add_run(m, unmasked, ints(tok), ints(tgt), T);
    CHECK(std::abs(unmasked.ce - alone.ce) > 1e-4 * std::abs(alone.ce));
  }
}

TEST_CASE("loss mask: a masked target contributes exactly nothing to the loss and the gradients", "[model]") {
  Transformer m(small_model(AttentionType::gqa));
  m.init(3);
  const std::int64_t T = 16;
  const Tensor tok = random_ints({T}, 1, 0, 49), all = random_ints({T}, 2, 0, 49);
  // The targets split in two sets: the run on each (the other masked, -1) sums to the run on all.
  std::vector<std::int32_t> a(T), b(T);
  for (std::int64_t t = 0; t < T; ++t) {
    const bool first = (t * 7) % 3 == 0;
    a[t] = first ? all.data<std::int32_t>()[t] : -1;
    b[t] = first ? -1 : all.data<std::int32_t>()[t];
  }
  Run whole, parts, part_a;
  add_run(m, whole, tok, all, T);
  add_run(m, parts, tok, ints(a), T);
  part_a = parts;
  add_run(m, parts, tok, ints(b), T);
  check_equal(parts, whole, 1e-5);
  CHECK(part_a.tokens == 6);
  CHECK(part_a.ce < 0.6 * whole.ce);  // (each half carries its own share)
}
