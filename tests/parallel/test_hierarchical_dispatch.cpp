// Run under mpirun, the ranks split into simulated nodes of MOE_TEST_RANKS_PER_NODE (default
// 2) consecutive ranks: one MoE layer with its experts sharded over every rank, dispatched
// hierarchically (once per destination node, then forwarded inside it) against the same layer
// dispatched flat. Outputs, input gradients and every parameter's gradient agree (bit for bit
// where the order of the sums is fixed: the per-assignment BF16 way back; within the BF16
// rounding of each node's partial sum under a node-reduced combine); and the bytes of each
// link equal the minimum the routing implies, counted here from every rank's choices:
// inter-node rows = (token, other node holding one of its kept experts) pairs, intra-node
// rows = at each forwarder, (row, other rank of its node holding one of the row's experts);
// the way back crosses nodes once per inter-node row (by row, node-reduced) or once per
// assignment there (per assignment).
#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdlib>

#include "model/moe.h"
#include "parallel/mpi_communicator.h"
#include "tests/support/testing.h"

using namespace moe;
using namespace moe::testing;

namespace {

int ranks_per_node() {
  const char* v = std::getenv("MOE_TEST_RANKS_PER_NODE");
  return v ? std::atoi(v) : 2;
}

// The world split by node and by place on the node, as parallel/mesh.cpp splits an ep group.
struct Nodes {
  explicit Nodes(MpiCommunicator& world, int per_node) {
    const int r = world.rank();
    MPI_Comm_split(world.comm(), r / per_node, r % per_node, &node_comm);
    MPI_Comm_split(world.comm(), r % per_node, r / per_node, &rail_comm);
    node = std::make_unique<MpiCommunicator>(node_comm);
    rail = std::make_unique<MpiCommunicator>(rail_comm);
    flat.ep = hier.ep = &world;
    flat.ranks_per_node = hier.ranks_per_node = per_node;
    hier.node = node.get(), hier.rail = rail.get();
  }
  ~Nodes() {
    node.reset(), rail.reset();
    MPI_Comm_free(&node_comm), MPI_Comm_free(&rail_comm);
  }
  Nodes(const Nodes&) = delete;
  Nodes& operator=(const Nodes&) = delete;
  MPI_Comm node_comm, rail_comm;
  std::unique_ptr<MpiCommunicator> node, rail;
  ExpertGroup flat, hier;
};

ModelConfig micro(int nodes) {
  ModelConfig c;
  c.d_model = 16, c.routed_experts = 16, c.top_k = 4, c.expert_hidden = 8, c.shared_experts = 1;
  c.n_groups = nodes, c.topk_groups = std::max(1, nodes / 2);  // groups are nodes: node-limited routing
  c.aux_loss_coef = 0.01;
  return c;
}

void same_weights(MoE& a, MoE& b, std::uint64_t seed) {
  auto pa = a.params(), pb = b.params();
  for (std::size_t i = 0; i < pa.size(); ++i) {
    pa[i]->w.copy_from(random(pa[i]->w.shape(), seed + i, 0.5, DType::f32));
    pb[i]->w.copy_from(pa[i]->w);
  }
  a.bias().copy_from(random({a.experts()}, seed + 99, 0.05, DType::f32));
  b.bias().copy_from(a.bias());
}

struct Run {
  Tensor out, dx;
};
// The largest |a - b| (b undefined: |a|) over the elements.
double max_abs_err(const Tensor& a, const Tensor& b = Tensor()) {
  double m = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) m = std::max(m, std::abs(at(a, i) - (b.defined() ? at(b, i) : 0.0)));
  return m;
}
Run run(MoE& m, const Tensor& x, const Tensor& dout, std::int64_t B, std::int64_t T) {
  Run r{Tensor::empty(x.shape(), DType::f32), Tensor::empty(x.shape(), DType::f32)};
  Tensor aux = Tensor::zeros({1}, DType::f64);
  m.forward(r.out, x, B, T, aux);
  m.backward(r.dx, dout, x, 0.5);
  return r;
}

// Rows per link implied by every rank's kept choices (all_kept (p, N*K), -1: none).
struct Links {
  std::uint64_t inter = 0, intra = 0, flat_inter = 0, inter_assignments = 0;
  int node_fan_out = 1;
};
Links links(const Tensor& all_kept, int p, int per_node, int me, std::int64_t N, std::int64_t K, std::int64_t El) {
  Links l;
  const int my_node = me / per_node, my_place = me % per_node;
  for (int s = 0; s < p; ++s)
    for (std::int64_t n = 0; n < N; ++n) {
      std::uint64_t ranks = 0;
      for (std::int64_t i = 0; i < K; ++i) {
        const int e = all_kept.data<std::int32_t>()[s * N * K + n * K + i];
        if (e >= 0) ranks |= 1ull << (e / El);
        if (e >= 0 && s == me && e / El / per_node != my_node) ++l.inter_assignments;
      }
      const std::uint64_t node_mask = (1ull << per_node) - 1;
      int nodes = 0;
      for (int m = 0; m < p / per_node; ++m) {
        const std::uint64_t there = ranks >> (m * per_node) & node_mask;
        if (!there) continue;
        ++nodes;
        if (s == me && m != my_node) ++l.inter, l.flat_inter += std::popcount(there);
        // Forwarded by the rank at the sender's place on node m to the others there.
        if (m == my_node && s % per_node == my_place) l.intra += std::popcount(there & ~(1ull << my_place));
      }
      if (s == me) l.node_fan_out = std::max(l.node_fan_out, nodes);
    }
  return l;
}

void check_layer(Precision precision, std::int64_t B = 2, std::int64_t T = 12, double capacity = 0,
                 bool node_reduced = false) {
  MpiCommunicator world;
  const int p = world.size(), r = world.rank(), per_node = ranks_per_node();
  REQUIRE(p % per_node == 0);
  Nodes nodes(world, per_node);
  nodes.hier.node_reduced = node_reduced;
  const bool reduced = node_reduced && precision != Precision::fp32 && p > per_node;
  ModelConfig c = micro(p / per_node);
  c.capacity_factor = capacity;
  MoE flat(c, "mlp.", nodes.flat, TensorParallel(), Gemm(precision)),
      hier(c, "mlp.", nodes.hier, TensorParallel(), Gemm(precision));
  same_weights(flat, hier, 10);
  const std::int64_t N = B * T, C = c.d_model, K = c.top_k, El = c.routed_experts / p;
  const Tensor x = random({N, C}, 1000 + r, 1, DType::f32), dout = random({N, C}, 2000 + r, 1, DType::f32);
  const Run f = run(flat, x, dout, B, T), h = run(hier, x, dout, B, T);

  // The per-assignment way back (bf16, fp8) sums in top-k order on both; by row (fp32) the
  // forwarder sums its node's rows first.
  const double tol = precision == Precision::fp32 ? 1e-6 : 0;
  if (reduced) {
    // Each node's partial sum rounded to BF16 (2^-9 of it) before the token adds them.
    const double out_err = max_abs_err(h.out, f.out), dx_err = max_abs_err(h.dx, f.dx);
    CHECK(out_err > 0);
    CHECK(out_err <= 0x1p-7 * max_abs_err(f.out));
    CHECK(dx_err <= 0x1p-7 * max_abs_err(f.dx));
  } else {
    CHECK(max_rel_err(h.out, f.out) <= tol);
    CHECK(max_rel_err(h.dx, f.dx) <= tol);
  }
  CHECK(hier.load() == flat.load());
  CHECK(hier.dropped() == flat.dropped());
  // Expert rows arrive in another order (by forwarder, then node): their sums differ in order.
  auto pf = flat.params(), ph = hier.params();
  for (std::size_t i = 0; i < pf.size(); ++i) {
    INFO(pf[i]->name);
    CHECK(max_rel_err(ph[i]->g, pf[i]->g) < (pf[i]->is_expert() ? 1e-6 : tol + 1e-12));
  }

  Tensor all_kept = Tensor::empty({p, N * K}, DType::i32);
  world.all_gather(all_kept, flat.kept().view({N * K}));
  const Links want = links(all_kept, p, per_node, r, N, K, El);
  const std::uint64_t Xb = precision == Precision::fp32   ? 4 * std::uint64_t(C)
                           : precision == Precision::bf16 ? 2 * std::uint64_t(C)
                                                          : std::uint64_t(C) + 4;
  CHECK(hier.inter_node_rows() == std::int64_t(want.inter));
  CHECK(hier.inter_node_bytes() == want.inter * Xb);
  CHECK(hier.dispatch_bytes() == (want.inter + want.intra) * Xb);
  CHECK(flat.inter_node_rows() == std::int64_t(want.flat_inter));
  CHECK(flat.inter_node_bytes() == want.flat_inter * Xb);
  CHECK(hier.max_ranks_per_token() == want.node_fan_out);  // the first hop's ranks are nodes
  CHECK(want.node_fan_out <= c.topk_groups);               // node-limited routing
  CHECK(want.inter <= want.flat_inter);
  // The way back across nodes (the last one, the input gradient's, like the combine's).
  const double back = world.all_reduce_sum(double(hier.back_inter_node_bytes())),
               rows = world.all_reduce_sum(
                   double(precision == Precision::fp32 || reduced ? want.inter : want.inter_assignments));
  CHECK(back == rows * double(precision == Precision::fp32 ? 4 * C : 2 * C));
}

}  // namespace

TEST_CASE("hierarchical dispatch equals flat, once per node on the network", "[mpi][moe]") {
  SECTION("fp32") { check_layer(Precision::fp32); }
  SECTION("bf16") { check_layer(Precision::bf16); }
  SECTION("fp8") { check_layer(Precision::fp8); }
  SECTION("capacity drops") { check_layer(Precision::fp32, 3, 8, 0.6); }
  SECTION("one token per rank") { check_layer(Precision::bf16, 1, 1); }
  SECTION("bf16, node-reduced combine") { check_layer(Precision::bf16, 2, 12, 0, true); }
  SECTION("fp8, node-reduced combine") { check_layer(Precision::fp8, 2, 12, 0, true); }
}
