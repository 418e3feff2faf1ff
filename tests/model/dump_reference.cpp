// dump_reference OUTDIR [--init CHECKPOINT] [key=value ...]: builds the model from config
// overrides with random weights, router biases and tokens (or with the config and weights of
// a checkpoint, e.g. one `moe import` wrote; overrides still apply), runs one forward/backward,
// and writes weights, tokens, loss and every gradient (manifest.json + tensors.bin) for
// tests/model/reference.py (an independent PyTorch implementation) or hf_check.py
// (transformers' own) to recompute and compare.
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include "checkpoint/checkpoint.h"
#include "model/hf_names.h"
#include "trainer/hf_config.h"
#include "trainer/run_meta.h"
#include "trainer/config_json.h"

using namespace moe;

namespace {
class Writer {
 public:
  void add(const std::string& name, const Tensor& t) {
    tensors_[name] = {
        {"dtype", t.dtype() == DType::i32 ? "i32" : "f32"}, {"shape", t.shape()}, {"offset", bin_.size()}};
    bin_.append(static_cast<const char*>(t.raw()), t.nbytes());
  }
  void save(const std::filesystem::path& dir, nlohmann::json manifest) {
    std::filesystem::create_directories(dir);
    manifest["tensors"] = tensors_;
    std::ofstream(dir / "manifest.json") << manifest.dump(1);
    std::ofstream(dir / "tensors.bin", std::ios::binary).write(bin_.data(), static_cast<std::streamsize>(bin_.size()));
  }

 private:
  nlohmann::json tensors_ = nlohmann::json::object();
  std::string bin_;
};
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: dump_reference OUTDIR [--init CHECKPOINT] [key=value ...]\n";
    return 2;
  }
  const bool from_checkpoint = argc > 3 && std::string(argv[2]) == "--init";
  const std::vector<std::string> overrides(argv + (from_checkpoint ? 4 : 2), argv + argc);
  const Config cfg = from_checkpoint ? parse_config(read_run_meta(argv[3]).config_yaml, argv[3], overrides)
                                     : parse_config("", "dump_reference", overrides);
  const ModelConfig& m = cfg.model;
  const std::int64_t B = 2, T = m.seq_len;
  Transformer model(m);
  model.init(7);
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  for (MoE* layer : model.moe_layers())
    for (std::int64_t e = 0; e < layer->experts(); ++e) layer->bias().data<float>()[e] = u(rng);
  if (from_checkpoint) {  // every weight and router bias as the checkpoint holds it
    auto stored = ckpt::read_group(argv[3], "weights");
    for (auto& [name, t] : ckpt::read_group(argv[3], "buffers")) stored.emplace(name, std::move(t));
    for (auto& t : hf_tensors(model)) t.value.copy_from(stored.at(t.name));
  }
  Tensor tokens = Tensor::empty({B * T}, DType::i32), targets = Tensor::empty({B * T}, DType::i32);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(m.vocab_size - 1));
  for (std::int64_t n = 0; n < B * T; ++n) {
    tokens.data<std::int32_t>()[n] = tok(rng);
    targets.data<std::int32_t>()[n] = n % 7 == 3 ? -1 : tok(rng);  // a few ignored targets
  }
  const double mtp_weight = cfg.train.mtp_loss_weight;
  model.set_mtp_weight(mtp_weight);
  const auto l = model.forward(tokens, targets, B, T);
  model.backward(1.0 / double(l.tokens), 1.0 / double(B));
  const double mtp = m.mtp_depth > 0 ? mtp_weight / double(m.mtp_depth) * l.mtp_sum / double(l.tokens) : 0.0;
  const double loss = l.ce_sum / double(l.tokens) + l.aux_sum / double(B) + mtp;

  Writer w;
  w.add("tokens", tokens.view({B, T}));
  w.add("targets", targets.view({B, T}));
  for (const auto& t : hf_tensors(model)) {
    w.add(t.name, t.value);
    if (t.grad.defined()) w.add("grad/" + t.name, t.grad);
  }
  const nlohmann::json model_json = config_section_json(cfg, "model");
  nlohmann::json manifest = {
      {"model", model_json}, {"batch", B}, {"seq", T}, {"loss", loss}, {"mtp_loss_weight", mtp_weight}};
  try {  // what moe export writes as config.json, for hf_check.py to build transformers' model from
    manifest["hf_config"] = hf_config_json(m);
  } catch (const ConfigError&) {  // no Hugging Face class computes this model (reference.py still checks it)
  }
  w.save(argv[1], manifest);
  std::cout << "dump_reference: loss " << loss << " -> " << argv[1] << "\n";
  return 0;
}
