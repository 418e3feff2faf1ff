// The planner: counts against the model's own tensors and against published model sizes;
// memory and step time on a hand-computed case; the 1F1B bubble; the layout search. Its
// memory and FLOPs against what a real run allocates and multiplies: tests/parallel/test_layouts.
#include <catch2/catch.hpp>

#include <functional>
#include <limits>

#include "comm/pipeline.h"
#include "model/transformer.h"
#include "plan/counts.h"
#include "plan/plan.h"
#include "plan/stages.h"

using namespace moe;

namespace {
Config source_config(const char* name) { return load_config(std::string(MOE_SOURCE_DIR) + "/configs/" + name); }
// A cluster with round numbers for closed forms: 1 TFLOP/s, 1 GB, 100 GB/s memory, 10 GB/s
// inside a node of `per_node` devices and 1 GB/s between nodes.
Cluster hand_cluster(int per_node) {
  return Cluster{.name = "hand",
                 .device = "computed",
                 .file = "",
                 .peak_bf16_tflops = 1.0,
                 .memory_gb = 1,
                 .memory_gbps = 100,
                 .intra_node_gbps = 10,
                 .inter_node_gbps = 1,
                 .devices_per_node = per_node};
}
}  // namespace

TEST_CASE("plan: parameter counts are the model's tensors", "[plan]") {
  // Without and with multi-token prediction (two depths: two more MoE blocks, each with its
  // norms and eh_proj; a token passes the LM head once per depth more).
  const std::string mtp = GENERATE(as<std::string>{}, "0", "2");
  Config cfg = parse_config("", "test",
                            {"model.n_layers=3", "model.dense_layers=1", "model.routed_experts=8", "model.top_k=2",
                             "model.shared_experts=1", "model.mtp_depth=" + mtp});
  INFO("model.mtp_depth=" << mtp);
  Transformer model(cfg.model);
  std::int64_t active = 0, norms = 0, total = 0, experts = 0;
  for (Param* p : model.params()) {
    total += p->w.numel();
    if (p->name == "model.embed_tokens.weight") continue;  // a lookup, not a GEMM
    const std::int64_t passes = p->name == "lm_head.weight" ? 1 + cfg.model.mtp_depth : 1;
    if (p->is_expert()) active += p->w.numel() / p->experts_total * cfg.model.top_k, experts += p->w.numel();
    else active += passes * p->w.numel();
    if (p->w.ndim() == 1) norms += p->w.numel();
  }
  CHECK(moe_layers(cfg.model) == std::int64_t(model.moe_layers().size()));
  CHECK(active_parameters(cfg.model) == active);
  CHECK(gemm_parameters_per_token(cfg.model) == active - norms);
  CHECK(total_parameters(cfg.model) == total);
  CHECK(expert_parameters(cfg.model) == experts);
}

TEST_CASE("plan: DeepSeek-V3 and Mixtral 8x7B count as published", "[plan]") {
  // DeepSeek-V3 (arXiv:2412.19437): 671B parameters, 37B activated, without the multi-token
  // prediction module; 685B with it (the released checkpoint: its MTP layer also stores
  // copies of the embedding and head, which moe shares). Mixtral 8x7B (arXiv:2401.04088):
  // 46.7B, 12.9B active. Active counts here leave out the embedding lookup; add it back.
  const Config ds = source_config("deepseek-v3.yaml"), mx = source_config("mixtral-8x7b.yaml");
  const auto embed = [](const Config& c) { return double(c.model.vocab_size * c.model.d_model); };
  REQUIRE(ds.model.mtp_depth == 1);
  CHECK(double(total_parameters(ds.model)) + 2 * embed(ds) == Approx(685e9).epsilon(0.005));
  ModelConfig main = ds.model;
  main.mtp_depth = 0;
  CHECK(double(total_parameters(main)) == Approx(671e9).epsilon(0.005));
  CHECK(double(active_parameters(main)) + embed(ds) == Approx(37e9).epsilon(0.02));
  CHECK(double(total_parameters(mx.model)) == Approx(46.7e9).epsilon(0.005));
  CHECK(double(active_parameters(mx.model)) + embed(mx) == Approx(12.9e9).epsilon(0.005));
}

TEST_CASE("plan: memory and step time on a hand-computed case", "[plan]") {
  // Dense, 2 blocks: 2 x (attention 4*64*64 + norms 2*64 + FFN 3*64*128) + embedding and head
  // 2*256*64 + final norm 64 = 115008 parameters.
  Config cfg = parse_config("", "test",
                            {"model.vocab_size=256", "model.seq_len=16", "model.d_model=64", "model.n_layers=2",
                             "model.n_heads=4", "model.n_kv_heads=4", "model.ffn_hidden=128", "model.routed_experts=0",
                             "model.dense_layers=2", "train.micro_batch=2", "train.grad_accum=4"});
  Cluster c = hand_cluster(4);
  c.compute_efficiency = 0.5;
  const Plan p = make_plan(cfg, c, Layout{1, 4, 1, 1});
  CHECK(p.memory.weights == 4.0 * 115008);
  CHECK(p.memory.gradients == 4.0 * 115008);
  CHECK(p.memory.optimizer == 8.0 * 115008);
  // 6 x (2 x (16384 + 24576) + head 16384) = 589824, plus per block 6 x 4 heads x 16 tokens x
  // (16 + 16) = 12288: 614400 FLOP per token; 2 x 16 x 4 = 128 tokens per rank at 0.5 TFLOP/s.
  CHECK(training_flops_per_token(cfg.model) == 614400.0);
  CHECK(p.time.compute == Approx(128 * 614400.0 / 0.5e12));
  // Gradient all-reduce over 4 ranks inside a node: 2 x 3/4 x 460032 bytes at 10 GB/s.
  CHECK(p.time.dp == Approx(690048 / 10e9));
  // Other ops stream memory. Saved per token and block: norm outputs 2C + att H*D + FFN h = 320
  // GEMM inputs; residuals 2C, rstd 2, q/k/v 3*64, softmax H*T = 64, FFN gate/up 2F: 642 others.
  // Two blocks and the ends (embedding output C, tokens/targets 2, xf C, rstd 1, logits V):
  // 2 x 962 + 387 = 2311 floats, 9244 bytes; written and read, with their gradients (4 passes),
  // for 128 tokens, plus 36 bytes per parameter of optimizer and gradient passes.
  CHECK(p.time.memory == Approx((4.0 * 128 * 9244 + 36.0 * 115008) / 100e9));
  CHECK(p.time.step() == Approx(p.time.compute + p.time.memory + p.time.dp));
  CHECK(p.tokens_per_step == 512);
  // 8 ranks leave the node: the all-reduce runs at the network's 1 GB/s.
  const Plan q = make_plan(cfg, c, Layout{1, 8, 1, 1});
  CHECK(q.time.dp == Approx(2 * 7.0 / 8 * 460032 / 1e9));
  // ZeRO-1 shards the moments (and keeps a gradient shard) over dp.
  cfg.parallel.zero = 1;
  const Plan z = make_plan(cfg, c, Layout{1, 4, 1, 1});
  CHECK(z.memory.optimizer == Approx(8.0 * 115008 / 4));
  CHECK(z.memory.gradients == Approx(4.0 * 115008 * (1 + 1.0 / 4)));
}

TEST_CASE("plan: the 1F1B bubble is (p-1)/(m+p-1) of the pipeline's time", "[plan]") {
  for (int pp : {2, 4}) {
    for (int m : {1, 4, 8}) {
      Config cfg = parse_config("", "test", {"model.n_layers=4", fmt::format("train.grad_accum={}", m)});
      const Cluster c = hand_cluster(8);
      const Plan p = make_plan(cfg, c, Layout{pp, 1, 1, 1});
      INFO("pp " << pp << ", m " << m);
      CHECK(p.time.bubble / (p.time.step() - p.time.dp) == Approx(double(pp - 1) / (m + pp - 1)));
      CHECK(p.in_flight == std::min(m, pp - p.memory_stage));  // stage s holds pp - s micro-batches
    }
  }
}

TEST_CASE("plan: DualPipeV's bubble is its simulated schedule's, its memory 2p + 1 chunk units", "[plan]") {
  for (int pp : {2, 4}) {
    for (int m : {2 * pp, 3 * pp}) {
      Config cfg = parse_config("", "test",
                                {"model.n_layers=8", "parallel.schedule=dualpipev", fmt::format("parallel.pp={}", pp),
                                 fmt::format("train.grad_accum={}", m)});
      const Cluster c = hand_cluster(8);
      const Plan p = make_plan(cfg, c, Layout{pp, 1, 1, 1});
      INFO("pp " << pp << ", m " << m);
      // forward, input and weight units of equal time (no recomputation, no LoRA)
      CHECK(p.time.bubble / (p.time.step() - p.time.dp) == Approx(dualpipev_bubble_fraction(pp, m, false)));
      CHECK(p.time.bubble / (p.time.step() - p.time.dp) < double(pp - 1) / (m + pp - 1) / 2);
      CHECK(p.in_flight == Approx(pp + 0.5));  // 2p + 1 units of a stage's two chunks
    }
  }
}

TEST_CASE("plan: DualPipeV's split balances the stages' two chunks, as well as every split can", "[plan]") {
  // Small models whose LM head outweighs a block: under the V it shares stage 0 with the
  // first chunk. Brute force over every split into 2p non-empty runs gives the least largest
  // stage; the split must reach it.
  for (const auto& [layers, p] :
       {std::pair{8, 2}, std::pair{10, 3}, std::pair{11, 2}, std::pair{12, 4}, std::pair{17, 4}}) {
    Config cfg = parse_config(
        "", "test",
        {fmt::format("model.n_layers={}", layers), "model.dense_layers=3", "model.vocab_size=4096",
         "parallel.schedule=dualpipev", fmt::format("parallel.pp={}", p), fmt::format("train.grad_accum={}", 2 * p)});
    const ModelConfig& m = cfg.model;
    std::vector<double> prefix(1, 0);
    for (std::int64_t i = 0; i < layers; ++i)
      prefix.push_back(prefix.back() + block_cost(m, i) + (i == layers - 1 ? head_cost(m) : 0));
    const auto largest = [&](const std::vector<std::int64_t>& b) {
      double most = 0;
      for (int s = 0; s < p; ++s)
        most = std::max(most, prefix[std::size_t(b[std::size_t(s + 1)])] - prefix[std::size_t(b[std::size_t(s)])] +
                                  prefix[std::size_t(b[std::size_t(2 * p - s)])] -
                                  prefix[std::size_t(b[std::size_t(2 * p - 1 - s)])]);
      return most;
    };
    double best = std::numeric_limits<double>::infinity();
    std::vector<std::int64_t> b(std::size_t(2 * p + 1), 0);
    b.back() = layers;
    const std::function<void(int)> cuts = [&](int k) {  // b[k] for k = 1 .. 2p-1, rising
      if (k == 2 * p) return void(best = std::min(best, largest(b)));
      for (std::int64_t x = b[std::size_t(k - 1)] + 1; x <= layers - (2 * p - k); ++x)
        b[std::size_t(k)] = x, cuts(k + 1);
    };
    cuts(1);
    const auto got = stage_bounds(cfg, 2 * p);
    INFO(layers << " blocks, " << p << " stages");
    REQUIRE(got.size() == std::size_t(2 * p + 1));
    for (int k = 0; k < 2 * p; ++k) CHECK(got[std::size_t(k)] < got[std::size_t(k + 1)]);
    CHECK(largest(got) == Approx(best));
    CHECK(head_cost(m) > block_cost(m, layers - 1));  // (the case the V makes hard)
    // The other stages even: within a block of each other (filling each to the largest would
    // leave the last ones light, and the slowest stage by time is not only FLOPs).
    double lo = std::numeric_limits<double>::infinity(), hi = 0;
    for (int s = 1; s < p; ++s) {
      const double sum = prefix[std::size_t(got[std::size_t(s + 1)])] - prefix[std::size_t(got[std::size_t(s)])] +
                         prefix[std::size_t(got[std::size_t(2 * p - s)])] -
                         prefix[std::size_t(got[std::size_t(2 * p - 1 - s)])];
      lo = std::min(lo, sum), hi = std::max(hi, sum);
    }
    if (p > 2) CHECK(hi - lo <= 1.01 * block_cost(m, layers - 1));
  }
}

TEST_CASE("plan: recomputation keeps less, overlap hides at most the compute", "[plan]") {
  const Config ds = source_config("deepseek-v3.yaml");
  const Cluster c = load_cluster(ds);
  const Layout l{16, 128, 1, 64};
  Config none = ds;
  none.train.recompute = false, none.parallel.overlap = false;
  const Plan keep = make_plan(none, c, l, {.overlap = 0});
  const Plan rec = make_plan(ds, c, l, {.overlap = 1});
  CHECK(rec.memory.activations < keep.memory.activations / 10);
  CHECK(rec.time.hidden == Approx(std::min(rec.time.compute + rec.time.memory, rec.time.ep + rec.time.dp)));
  CHECK(keep.time.hidden == 0);
  CHECK(rec.time.step() < keep.time.step());
  // parallel.overlap alone: the shared expert (2048 wide, 1/9 of the MoE FFN's FLOPs) hides
  // its own time's worth of the first hop, forward and backward: 3 x 2 x 7168 x 2048 FLOP a
  // token, 3 passes, at most the compute and at most the all-to-all.
  const Plan shared = make_plan(ds, c, l, {.overlap = 0});
  const double tokens = double(shared.tokens_per_step) / l.dp, blocks = 58.0 / 16 + 1;
  CHECK(shared.time.hidden > 0);
  CHECK(shared.time.hidden <=
        3 * 2 * 3 * 7168.0 * 2048 * tokens * blocks / (c.peak_tflops(ds.precision) * 1e12 * c.compute_efficiency));
  CHECK(shared.time.hidden < shared.time.ep);
}

TEST_CASE("plan: hierarchical dispatch crosses the network once per other node", "[plan]") {
  // ep 8 over 2 nodes of 4, top-2 of 8 experts in 2 groups of 4 (a group per node), one group
  // per token: experts on r = 4 (1 - (3/4)^2) = 1.75 distinct ranks, all on one node.
  Config cfg = parse_config(
      "", "test",
      {"model.routed_experts=8", "model.top_k=2", "model.n_groups=2", "model.topk_groups=1", "parallel.dispatch=flat"});
  const Layout l{1, 8, 1, 8};
  const Plan flat = make_plan(cfg, hand_cluster(4), l);
  cfg.parallel.dispatch = DispatchKind::hierarchical;
  const Plan hier = make_plan(cfg, hand_cluster(4), l);
  REQUIRE(flat.ranks_per_token == Approx(1.75));
  CHECK(hier.nodes_per_token == 1);
  // Per token, flat: r (ep - 4) / ep = 0.875 rows across, r 3/8 inside; hierarchical: one row
  // to the other node half the time, then forwarded to r 3/4 ranks inside (FP32: equal rows).
  CHECK(hier.ep_inter_bytes / flat.ep_inter_bytes == Approx(0.5 / 0.875));
  CHECK(hier.ep_intra_bytes / flat.ep_intra_bytes == Approx(2.0));
  CHECK(hier.time.ep < flat.time.ep);
  // Inside one node there is nothing to forward: the two are one.
  const Plan one = make_plan(cfg, hand_cluster(8), l);
  cfg.parallel.dispatch = DispatchKind::flat;
  CHECK(make_plan(cfg, hand_cluster(8), l).time.ep == Approx(one.time.ep));
}

TEST_CASE("plan: a node-reduced combine brings one BF16 row back across per row sent", "[plan]") {
  // ep 8 over 2 nodes of 4, top-2 of 8 experts, no group limit: a token's experts are on
  // 2 (1 - (1/2)^2) = 1.5 nodes, 0.75 rows across, each carrying 2 / 1.5 assignments. Per
  // row across (bf16): C forward out, C output gradient out, then back per assignment the
  // combine's and the input gradient's rows (2 C x 4/3) or, node-reduced, one each (2 C),
  // 2 bytes an element; and 3 top_k i32/f32 of metadata.
  Config cfg = parse_config("", "test", {"model.routed_experts=8", "model.top_k=2", "precision=bf16"});
  const Layout l{1, 8, 1, 8};
  const Plan each = make_plan(cfg, hand_cluster(4), l);
  cfg.parallel.node_reduced_combine = true;
  const Plan reduced = make_plan(cfg, hand_cluster(4), l);
  const double C = double(cfg.model.d_model), meta = 3 * 2 * 4;
  CHECK(reduced.ep_inter_bytes / each.ep_inter_bytes ==
        Approx((2 * C * (2 + 2) + meta) / (2 * C * (2 + 2 * 4.0 / 3) + meta)));
  CHECK(reduced.ep_intra_bytes == each.ep_intra_bytes);  // inside the node each assignment still comes back
  cfg.precision = Precision::fp32;                       // by row already
  const Plan fp32 = make_plan(cfg, hand_cluster(4), l);
  cfg.parallel.node_reduced_combine = false;
  CHECK(make_plan(cfg, hand_cluster(4), l).ep_inter_bytes == fp32.ep_inter_bytes);
}

TEST_CASE("plan: redundant experts cost their copies' memory and two copies a step inside the node", "[plan]") {
  // ep 8 over 2 nodes of 4, hierarchical: replicas stay on their expert's node.
  Config cfg = parse_config("", "test", {"model.routed_experts=8", "model.top_k=2"});
  const Layout l{1, 8, 1, 8};
  const Plan none = make_plan(cfg, hand_cluster(4), l);
  cfg.parallel.redundant_experts = 2;
  const Plan two = make_plan(cfg, hand_cluster(4), l);
  const double copies = double(moe_layers(cfg.model)) * 2 * double(routed_expert_parameters(cfg.model));
  CHECK(two.memory.weights - none.memory.weights == Approx(4 * copies));
  CHECK(two.memory.gradients - none.memory.gradients == Approx(4 * copies));
  CHECK(two.memory.optimizer == none.memory.optimizer);  // not parameters: no moments
  CHECK(two.replica_bytes == Approx(2 * 4 * copies));    // weights out, gradients back, inside the node
  CHECK(two.time.replicas == Approx(2 * 4 * copies / 10e9));
  CHECK(two.ep_intra_bytes == none.ep_intra_bytes);  // the dispatch's traffic is its own
  CHECK(two.time.bubble == none.time.bubble);        // once a step, outside the schedule
  CHECK(two.time.compute == none.time.compute);
}

TEST_CASE("plan: worst-case memory when one rank receives more expert rows", "[plan]") {
  Config ds = source_config("deepseek-v3.yaml");
  const Layout l{16, 128, 1, 64};
  // Collapse: all 8 experts of every token on one rank of 4 experts: 64 x 4 / 8 = 32x; a
  // capacity factor caps it; without ep the rows total N top_k wherever they go.
  CHECK(expert_load_bound(ds.model, l) == 32);
  CHECK(expert_load_bound(ds.model, Layout{1, 8, 1, 1}) == 1);
  ds.model.capacity_factor = 2;
  CHECK(expert_load_bound(ds.model, l) == 2);
  const Cluster c = load_cluster(ds);
  const Plan even = make_plan(ds, c, l), twice = make_plan(ds, c, l, {.load = 2});
  CHECK(twice.memory.weights == even.memory.weights);
  CHECK(twice.memory.workspace > even.memory.workspace);             // recomputation: the activations are block inputs
  CHECK(twice.memory.buffers == Approx(1.5 * even.memory.buffers));  // the received half doubles
  CHECK(twice.time.compute == even.time.compute);
  CHECK_THAT(plan_text(even, ds, c, {}), Catch::Contains("imbalance         2x the balanced expert rows"));
}

TEST_CASE("plan: search lists fitting layouts of the devices, cheapest first", "[plan]") {
  const Config mx = source_config("mixtral-8x7b.yaml");
  const Cluster c = load_cluster(mx);
  const auto plans = search_layouts(mx, c, 128);
  REQUIRE(plans.size() > 10);
  for (std::size_t i = 0; i < plans.size(); ++i) {
    CHECK(plans[i].layout.world() == 128);
    CHECK(plans[i].fits());
    CHECK(plans[i].tokens_per_step == plans[0].tokens_per_step);  // the config's global batch throughout
    if (i > 0) CHECK(plans[i - 1].time.step() <= plans[i].time.step());
  }
  // 16 GB devices fit fewer layouts, and none of them holds more.
  Cluster small = c;
  small.memory_gb = 16;
  const auto fewer = search_layouts(mx, small, 128);
  CHECK(fewer.size() < plans.size());
  for (const auto& p : fewer) CHECK(p.memory.total() <= 16e9);
}
