// Run under mpirun: one MoE layer with its experts sharded over every rank (expert
// parallelism) against the same layer unsharded on each rank (world size 1): outputs, input
// gradients, router and expert gradients; and the all-to-all byte counter against the bytes
// the routing decisions imply (counts of rows and of assignments per expert, then four passes of one row per (token,
// rank) with their per-slot metadata), computed from the unsharded layer's choices gathered from every rank.
#include <catch2/catch.hpp>

#include <bit>

#include "model/moe.h"
#include "parallel/mpi_communicator.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {

ModelConfig micro() {
  ModelConfig c;
  c.d_model = 16, c.routed_experts = 8, c.top_k = 3, c.expert_hidden = 8, c.shared_experts = 1;
  c.n_groups = 4, c.topk_groups = 2;  // 2 experts per group: at 4 ranks, one group per rank
  c.aux_loss_coef = 0.01;
  return c;
}

// Same weights in both layers: ref's random values, the expert tensors sliced to ep's experts.
void copy_weights(MoE& ep, MoE& ref) {
  auto rp = ref.params(), ept = ep.params();
  for (std::size_t i = 0; i < rp.size(); ++i) {
    rp[i]->w.copy_from(random(rp[i]->w.shape(), 10 + i, 0.5, DType::f32));
    ept[i]->w.copy_from(ept[i]->is_expert() ? rp[i]->w.rows(ept[i]->expert_begin, ept[i]->w.size(0)) : rp[i]->w);
  }
  ref.bias().copy_from(random({ref.experts()}, 99, 0.05, DType::f32));
  ep.bias().copy_from(ref.bias());
}

void check_layer(const ModelConfig& c, std::int64_t B, std::int64_t T, Precision precision = Precision::fp32) {
  MpiCommunicator world;
  const int p = world.size(), r = world.rank();
  MoE ref(c, "mlp.", nullptr, TensorParallel(), Gemm(precision)),
      ep(c, "mlp.", &world, TensorParallel(), Gemm(precision));
  REQUIRE(ep.local_experts() * p == ref.experts());
  copy_weights(ep, ref);
  const std::int64_t N = B * T, C = c.d_model, K = c.top_k, E = c.routed_experts, El = E / p;
  const Tensor x = random({N, C}, 1000 + r, 1, DType::f32), dout = random({N, C}, 2000 + r, 1, DType::f32);
  Tensor out_ref = Tensor::empty({N, C}, DType::f32), out_ep = Tensor::empty({N, C}, DType::f32);
  Tensor dx_ref = Tensor::empty({N, C}, DType::f32), dx_ep = Tensor::empty({N, C}, DType::f32);
  Tensor aux_ref = Tensor::zeros({1}, DType::f64), aux_ep = Tensor::zeros({1}, DType::f64);
  ref.forward(out_ref, x, B, T, aux_ref);
  ep.forward(out_ep, x, B, T, aux_ep);
  ref.backward(dx_ref, dout, x, 0.5);
  ep.backward(dx_ep, dout, x, 0.5);

  CHECK(aux_ref.data<double>()[0] > 0);
  CHECK(aux_ep.data<double>()[0] == Approx(aux_ref.data<double>()[0]).epsilon(1e-12));
  CHECK(max_rel_err(out_ep, out_ref) < 1e-5);
  CHECK(max_rel_err(dx_ep, dx_ref) < 1e-5);
  CHECK(ep.load() == ref.load());
  CHECK(ep.dropped() == ref.dropped());
  // Gradients: router and shared experts are local to each rank's tokens; an expert's
  // gradient collects every rank's tokens, so the unsharded one is summed over ranks first.
  auto rp = ref.params(), ept = ep.params();
  for (std::size_t i = 0; i < rp.size(); ++i) {
    INFO(rp[i]->name);
    if (!ept[i]->is_expert()) {
      CHECK(max_rel_err(ept[i]->g, rp[i]->g) < 1e-5);
      continue;
    }
    Tensor sum = Tensor::empty(rp[i]->g.shape(), DType::f32);
    sum.copy_from(rp[i]->g);
    world.all_reduce_sum(sum);
    CHECK(max_rel_err(ept[i]->g, sum.rows(ept[i]->expert_begin, El)) < 1e-5);
  }

  // Bytes implied by the routing: every rank's choices (from the unsharded layer).
  Tensor all_idx = Tensor::empty({p, N * K}, DType::i32), kept = Tensor::empty({N * K}, DType::i32),
         all_kept = Tensor::empty({p, N * K}, DType::i32);
  const Tensor ref_kept = ref.kept();
  for (std::int64_t a = 0; a < N * K; ++a) kept.data<std::int32_t>()[a] = ref_kept.data<std::int32_t>()[a] >= 0 ? 1 : 0;
  world.all_gather(all_idx, ref.routing().view({N * K}));
  world.all_gather(all_kept, kept);
  world.reset_bytes();
  // Re-run the sharded layer alone so the counter holds exactly one forward and backward.
  ep.forward(out_ep, x, B, T, aux_ep);
  ep.backward(dx_ep, dout, x, 0.5);
  // Rows: one per (token, other rank holding one of its kept experts). mine_out: my tokens'
  // rows; theirs_in: other ranks' rows to my experts. assignments_out: my kept assignments
  // whose expert is elsewhere (what one row per assignment would send).
  std::uint64_t mine_out = 0, theirs_in = 0, assignments_out = 0, assignments_in = 0;
  int fan_out = 1;
  for (int s = 0; s < p; ++s)
    for (std::int64_t n = 0; n < N; ++n) {
      std::uint64_t ranks = 0;
      for (std::int64_t i = 0; i < K; ++i) {
        const std::int64_t a = n * K + i;
        if (!all_kept.data<std::int32_t>()[s * N * K + a]) continue;
        const int owner = all_idx.data<std::int32_t>()[s * N * K + a] / static_cast<int>(El);
        ranks |= 1ull << owner;
        if (s == r && owner != r) ++assignments_out;
        if (s != r && owner == r) ++assignments_in;
      }
      const std::uint64_t others = ranks & ~(1ull << s);
      if (s == r) mine_out += std::popcount(others), fan_out = std::max(fan_out, std::popcount(ranks));
      if (s != r && (ranks >> r & 1)) ++theirs_in;
    }
  // A dispatched row: C values as FP32, BF16, or E4M3 with one FP32 scale per 128. Under
  // fp32 the combine and the input gradients go back as one FP32 sum per row; under bf16 and
  // fp8 as one BF16 row per assignment, and the output gradients go out as BF16.
  const auto C64 = static_cast<std::uint64_t>(C);
  const bool fp32 = precision == Precision::fp32;
  const std::uint64_t Xb = fp32                           ? 4 * C64
                           : precision == Precision::bf16 ? 2 * C64
                                                          : C64 + 4 * ((C64 + 127) / 128),
                      Db = fp32 ? 4 * C64 : 2 * C64, back = fp32 ? theirs_in * 4 * C64 : assignments_in * 2 * C64,
                      Kb = static_cast<std::uint64_t>(K) * 4, counts = static_cast<std::uint64_t>(p - 1) * 4 * (1 + El);
  // Forward: to each other rank a row count and an assignment count per expert it holds; my rows out with (local
  // expert, gate) per slot; their combine back. Backward: my output gradients out; their input gradients and gate
  // gradients back.
  CHECK(world.bytes_sent().at("all_to_all") ==
        counts + mine_out * (Xb + 2 * Kb) + back + mine_out * Db + back + theirs_in * Kb);
  CHECK(ep.dispatch_bytes() == mine_out * Xb);
  CHECK(ep.max_ranks_per_token() == fan_out);
  CHECK(ep.remote_rows() == static_cast<std::int64_t>(assignments_out));
  CHECK(ep.remote_token_ranks() == static_cast<std::int64_t>(mine_out));
  if (p == c.n_groups)  // one group per rank: group-limited routing bounds the fan-out
    CHECK(fan_out <= c.topk_groups);
}

}  // namespace

TEST_CASE("expert parallel: a sharded MoE layer equals the unsharded one, bytes as routed", "[mpi][moe]") {
  check_layer(micro(), 2, 12);
}

// FP8: rows dispatched as E4M3 codes with their scales, quantised where the token lives (the
// same bits as quantising them where the expert lives), a BF16 combine of one row per
// assignment; the weight gradient's tiles follow the source ranks, as the unsharded layer's
// do. d_model 200: two scale tiles.
TEST_CASE("expert parallel: FP8 and BF16 layers equal their unsharded selves", "[mpi][moe][fp8]") {
  ModelConfig c = micro();
  c.d_model = 200;
  SECTION("fp8") { check_layer(c, 2, 12, Precision::fp8); }
  SECTION("bf16") { check_layer(c, 2, 12, Precision::bf16); }
}

TEST_CASE("expert parallel: capacity drops are decided where the token lives", "[mpi][moe]") {
  ModelConfig c = micro();
  c.capacity_factor = 0.6;
  c.n_groups = 1, c.topk_groups = 1;
  check_layer(c, 3, 8);
}

TEST_CASE("expert parallel: a rank whose experts receive nothing", "[mpi][moe]") {
  ModelConfig c = micro();
  c.n_groups = 1, c.topk_groups = 1, c.top_k = 1;
  // One token per rank, top-1: most ranks' experts get no rows at all.
  check_layer(c, 1, 1);
}
