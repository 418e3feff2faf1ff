// Param::ShapesOnly: a model made without storage lists exactly the tensors (names, full
// shapes, weights or buffers) of the same model made with it, for every kind of block; and
// DeepSeek-V3 at full size (671B parameters and its MTP) is listed in a few MB.
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include "config/config.h"
#include "model/hf_names.h"

using namespace moe;

TEST_CASE("model: ShapesOnly lists the tensors a model with storage has", "[model]") {
  const std::vector<std::string> base = {"model.vocab_size=40", "model.d_model=16",      "model.n_heads=2",
                                         "model.ffn_hidden=24", "model.expert_hidden=8", "model.routed_experts=4"};
  const std::vector<std::string> variant =
      GENERATE(std::vector<std::string>{"model.n_layers=2"}, std::vector<std::string>{"model.routed_experts=0"},
               std::vector<std::string>{"model.attention=mla", "model.q_lora_rank=8", "model.kv_lora_rank=6",
                                        "model.qk_nope_head_dim=4", "model.qk_rope_head_dim=2", "model.v_head_dim=4",
                                        "model.mtp_depth=2", "model.shared_experts=0"});
  std::vector<std::string> kv = base;
  kv.insert(kv.end(), variant.begin(), variant.end());
  const Config cfg = parse_config("", "test", kv);
  Transformer real(cfg.model);
  std::vector<TensorSpec> expected;
  for (const auto& t : hf_tensors(real)) expected.push_back({t.name, t.value.shape(), t.grad.defined()});
  const Param::ShapesOnly shapes_only;
  Transformer shapes(cfg.model);
  const auto specs = hf_tensor_specs(shapes);
  REQUIRE(specs.size() == expected.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    INFO(expected[i].name);
    CHECK(specs[i].name == expected[i].name);
    CHECK(specs[i].shape == expected[i].shape);
    CHECK(specs[i].weight == expected[i].weight);
  }
  for (Param* p : shapes.params()) CHECK_FALSE(p->w.defined());
}

TEST_CASE("model: ShapesOnly lists DeepSeek-V3 in little memory", "[model]") {
  const Config cfg = load_config(std::string(MOE_SOURCE_DIR) + "/configs/deepseek-v3.yaml");
  const Param::ShapesOnly shapes_only;
  Transformer model(cfg.model);
  double elements = 0;
  std::size_t tensors = 0;
  for (const auto& s : hf_tensor_specs(model)) {
    double n = 1;
    for (auto d : s.shape) n *= double(d);
    elements += n, ++tensors;
  }
  // 61 blocks + 1 MTP block, 256 experts x 3 projections in each of the 59 MoE ones.
  CHECK(tensors > std::size_t(59 * 256 * 3));
  CHECK(elements == Approx(6.83e11).epsilon(0.005));
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  CHECK(u.ru_maxrss < 2 * 1024 * 1024);  // KiB: the process, test binary included, under 2 GiB
}
