// `moe export`: a checkpoint's weights for other tools. safetensors (the format Hugging Face
// loads): OUT/model.safetensors with every weight and router bias under its Hugging Face name
// (f32, routed experts one tensor each), and OUT/config.json describing the model in Hugging
// Face's DeepSeek-V3 vocabulary (docs/CHECKPOINT.md lists the correspondence and what differs).
#pragma once
#include <string>

namespace moe {

struct ExportResult {
  std::string safetensors, config;
  std::string tokenizer;  // OUT/tokenizer.model (with tokenizer_config.json); empty: none found
  std::size_t tensors = 0;
  double bytes = 0;
};

// One process. Every tensor is checksum-verified on the way (CheckpointError otherwise);
// the files appear complete or not at all (written under temporary names, then renamed).
// The tokenizer: `tokenizer` (a SentencePiece tokenizer.model), else the run's
// data.dir/tokenizer.model where it exists; written as OUT/tokenizer.model with a
// tokenizer_config.json for transformers' LlamaTokenizer (SentencePiece as it is: no BOS, the
// eos and unk pieces of moe data prepare).
// Multi-token prediction's layers (model.layers.{n_layers + k - 1}.*) are left out unless
// with_mtp, which writes them as DeepSeek's release does: with copies of the shared embedding
// and head under each depth (embed_tokens, shared_head.head) and num_nextn_predict_layers.
ExportResult export_safetensors(const std::string& checkpoint, const std::string& out_dir,
                                const std::string& tokenizer = "", bool with_mtp = false);

}  // namespace moe
