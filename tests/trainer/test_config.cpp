// Config: defaults valid, round trip through the printed YAML, overrides, and one-line errors
// that name the file (or --set), the line and the key.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "kernels/error.h"
#include "config/config.h"
#include "trainer/hf_config.h"

using namespace moe;

namespace {
// Expects parse_config to throw a ConfigError whose message contains every fragment.
void expect_error(const std::string& yaml, const std::vector<std::string>& fragments,
                  const std::vector<std::string>& overrides = {}) {
  INFO("config:\n" << yaml);
  try {
    parse_config(yaml, "bad.yaml", overrides);
    FAIL("no ConfigError thrown");
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(msg.find('\n') == std::string::npos);  // one line
    for (const auto& f : fragments) CHECK(msg.find(f) != std::string::npos);
  }
}
}  // namespace

TEST_CASE("config: an empty file gives the valid defaults", "[config]") {
  Config c = parse_config("", "empty.yaml");
  CHECK(c.model.d_model == 64);
  CHECK(c.precision == Precision::fp32);
}

TEST_CASE("config: the printed resolved config parses back to itself", "[config]") {
  Config c = parse_config(
      "model:\n  d_model: 96\n  n_heads: 6\n  n_kv_heads: 3\n  router: softmax\n"
      "train:\n  lr: 1.5e-4\n  min_lr: 1e-5\ndata:\n  corpus: \"dir with: colon\"\nprecision: bf16\n",
      "a.yaml");
  const std::string yaml = config_to_yaml(c);
  Config d = parse_config(yaml, "printed");
  CHECK(config_to_yaml(d) == yaml);
  CHECK(d.model.router == RouterType::softmax);
  CHECK(d.train.lr == 1.5e-4);
  CHECK(d.data.corpus == "dir with: colon");
  CHECK(d.precision == Precision::bf16);
}

TEST_CASE("config: --set overrides the file and parses typed values", "[config]") {
  Config c = parse_config("train:\n  steps: 5\n", "a.yaml",
                          {"train.steps=7", "model.router_normalize=false", "train.lr=0.01"});
  CHECK(c.train.steps == 7);
  CHECK_FALSE(c.model.router_normalize);
  CHECK(c.train.lr == 0.01);
}

TEST_CASE("config: load_config reads a file and names it in errors", "[config]") {
  const std::string path = "test_config_tmp.yaml";
  std::ofstream(path) << "model:\n  d_model: 32\n  n_heads: 3\n  n_kv_heads: 3\n";
  CHECK_THROWS_WITH(load_config(path),
                    Catch::Contains("test_config_tmp.yaml:3: model.n_heads: 3 does not divide model.d_model = 32"));
  CHECK_THROWS_WITH(load_config("no/such/file.yaml"), Catch::Contains("no/such/file.yaml: cannot open"));
}

TEST_CASE("config: bad configs are one-line errors naming file, line and key", "[config]") {
  // 1. unknown key with a suggestion
  expect_error("model:\n  d_modle: 64\n",
               {"bad.yaml:2", "unknown key 'model.d_modle'", "did you mean 'model.d_model'"});
  // 2. a key in the wrong section suggests the right one
  expect_error("d_model: 64\n", {"bad.yaml:1", "'d_model'", "did you mean 'model.d_model'"});
  // 3. unknown section
  expect_error("modle:\n  d_model: 64\n", {"bad.yaml:1", "unknown key 'modle'"});
  // 4. wrong type: text for an integer
  expect_error("train:\n  steps: many\n", {"bad.yaml:2", "train.steps", "expected an integer, got 'many'"});
  // 5. wrong type: a fraction for an integer
  expect_error("model:\n  n_layers: 2.5\n", {"bad.yaml:2", "model.n_layers", "expected an integer"});
  // 6. out of range
  expect_error("train:\n  lr: -0.1\n", {"bad.yaml:2", "train.lr", "out of range", "in (0, 1)"});
  // 7. not one of the choices
  expect_error("precision: fp16\n", {"bad.yaml:1", "precision", "'fp16' is not one of fp32, bf16, fp8"});
  // 8. a section given a value
  expect_error("model: 5\n", {"bad.yaml:1", "model", "expected a mapping"});
  // 9. a list where a scalar belongs
  expect_error("model:\n  top_k: [1, 2]\n", {"bad.yaml:2", "model.top_k", "got a list"});
  // 10. cross-key: top_k > routed_experts
  expect_error("model:\n  routed_experts: 4\n  top_k: 6\n",
               {"bad.yaml:3", "model.top_k", "6 exceeds model.routed_experts = 4"});
  // 11. cross-key: GQA divisibility
  expect_error("model:\n  n_heads: 4\n  n_kv_heads: 3\n",
               {"bad.yaml:3", "model.n_kv_heads", "does not divide model.n_heads = 4"});
  // 12. cross-key: groups
  expect_error("model:\n  routed_experts: 8\n  n_groups: 3\n",
               {"bad.yaml:3", "model.n_groups", "does not divide model.routed_experts = 8"});
  // 13. invalid YAML
  expect_error("model:\n  d_model: [64\n", {"bad.yaml:", "invalid YAML"});
  // 14. a bad --set names the override
  expect_error("", {"--set train.steps=abc", "train.steps", "expected an integer"}, {"train.steps=abc"});
  // 15. --set of an unknown key
  expect_error("", {"--set train.step=3", "did you mean 'train.steps'"}, {"train.step=3"});
  // 16. --set without '='
  expect_error("", {"--set train.steps", "expected key=value"}, {"train.steps"});
  // 17. a default broken by another key names the file
  expect_error("model:\n  routed_experts: 1\n",
               {"bad.yaml (default)", "model.top_k", "2 exceeds model.routed_experts = 1"});
  // 18. min_lr above lr
  expect_error("train:\n  lr: 0.001\n  min_lr: 0.01\n", {"bad.yaml:3", "train.min_lr", "exceeds train.lr"});
  // 19. empty string
  expect_error("data:\n  corpus: ''\n", {"bad.yaml:2", "data.corpus", "must not be empty"});
  // 20. redundant experts with LoRA (replicas carry no adapters)
  expect_error("parallel:\n  ep: 2\n  redundant_experts: 1\nlora:\n  rank: 4\n",
               {"bad.yaml:3", "parallel.redundant_experts", "with LoRA (lora.rank = 4)"});
}

TEST_CASE("config: README's reference table is the generated one", "[config][docs]") {
  std::ifstream in(MOE_SOURCE_DIR "/README.md");
  REQUIRE(in);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string readme = ss.str(), begin = "<!-- config-reference:begin -->\n",
                    end = "<!-- config-reference:end -->";
  const auto b = readme.find(begin), e = readme.find(end);
  REQUIRE(b != std::string::npos);
  REQUIRE(e != std::string::npos);
  INFO("regenerate with: scripts/gen-readme-reference.sh");
  CHECK(readme.substr(b + begin.size(), e - b - begin.size()) == config_reference_markdown());
}

TEST_CASE("config: moe export refuses a model no Hugging Face class computes, naming the key", "[config]") {
  // MLA with a softmax router: DeepseekV3 routes by sigmoid. GQA with one is Mixtral's, which
  // has no shared expert; GQA with a sigmoid router is Glm4Moe's, which always has one.
  const Config mla_softmax = parse_config("", "test", {"model.router=softmax", "model.attention=mla"});
  CHECK_THROWS_WITH(hf_config_json(mla_softmax.model), Catch::Contains("model.router: softmax"));
  const Config softmax = parse_config("", "test", {"model.router=softmax"});
  CHECK_THROWS_WITH(hf_config_json(softmax.model), Catch::Contains("model.shared_experts: Mixtral"));
  const Config unshared = parse_config("", "test", {"model.shared_experts=0"});
  CHECK_THROWS_WITH(hf_config_json(unshared.model), Catch::Contains("model.shared_experts: 0"));
  const Config mixtral = parse_config("", "test",
                                      {"model.router=softmax", "model.shared_experts=0", "model.dense_layers=0",
                                       "model.n_groups=1", "model.topk_groups=1"});
  CHECK(hf_config_json(mixtral.model)["architectures"][0] == "MixtralForCausalLM");
  // The GQA class's defaults that would load and compute something else are written out.
  const auto j = hf_config_json(parse_config("", "test", {}).model);
  CHECK(j["architectures"][0] == "Glm4MoeForCausalLM");
  CHECK(j["partial_rotary_factor"] == 1.0);
  CHECK(j["use_qk_norm"] == false);
  CHECK(j["rms_norm_eps"] == 1e-6);
  // And config.json read back is the model section again.
  Config back, ours;
  back.model = model_from_hf(j, "test"), ours.model = parse_config("", "test", {}).model;
  CHECK(config_to_yaml(back) == config_to_yaml(ours));
}
