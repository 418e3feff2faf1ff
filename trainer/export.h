// `moe export`: a checkpoint's weights for other tools. safetensors (the format Hugging Face
// loads): OUT/model.safetensors with every weight and router bias under its Hugging Face name
// (f32, routed experts one tensor each), and OUT/config.json describing the model in Hugging
// Face's DeepSeek-V3 vocabulary (docs/CHECKPOINT.md lists the correspondence and what differs).
#pragma once
#include <cstddef>
#include <string>

namespace moe {

// A checkpoint's LoRA adapters (model/lora.h): folded into their projections (W + s B A), or
// written apart as a Hugging Face PEFT adapter directory, OUT/adapter (adapter_model.safetensors
// and adapter_config.json; PeftModel.from_pretrained(base, OUT/adapter)), beside the base
// model as it was.
enum class LoraExport { merge, peft };

struct ExportResult {
  std::string safetensors, config;
  std::string adapter;      // OUT/adapter under LoraExport::peft; empty: none written
  std::size_t adapted = 0;  // projections with an adapter (merged or written)
  std::string tokenizer;    // OUT/tokenizer.model or tokenizer.json (with tokenizer_config.json); empty: none
  std::size_t tensors = 0;
  double bytes = 0;
};

// One process. Every tensor is checksum-verified on the way (CheckpointError otherwise);
// the files appear complete or not at all (written under temporary names, then renamed).
// The tokenizer: `tokenizer`, else the run's data.dir's where it exists. A tokenizer.json (a
// model's own) is copied with its tokenizer_config.json; a tokenizer.model is written with a
// tokenizer_config.json for transformers' LlamaTokenizer (SentencePiece as it is: no BOS, the
// eos and unk pieces of moe data prepare).
// Multi-token prediction's layers (model.layers.{n_layers + k - 1}.*) are left out unless
// with_mtp, which writes them as DeepSeek's release does: with copies of the shared embedding
// and head under each depth (embed_tokens, shared_head.head) and num_nextn_predict_layers.
ExportResult export_safetensors(const std::string& checkpoint, const std::string& out_dir,
                                const std::string& tokenizer = "", bool with_mtp = false,
                                LoraExport lora = LoraExport::merge);

}  // namespace moe
