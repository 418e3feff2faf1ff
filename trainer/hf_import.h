// `moe import`: a Hugging Face model directory (config.json and safetensors: DeepSeek-V3's
// architecture, model_type deepseek_v3) as a moe checkpoint to fine-tune from.
#pragma once
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace moe {

struct ImportResult {
  std::string checkpoint;            // OUT/step_00000000.h5: weights and router biases, no optimizer state
  std::string config;                // OUT/config.yaml: every key, the model section imported
  std::size_t tensors = 0;           // read, as our tensors (each routed expert one)
  std::vector<std::string> skipped;  // HF tensors left out (multi-token-prediction layers), by prefix
  double bytes = 0;                  // f32 bytes written
};

// Collective over comm (every rank sees hf_dir and out_dir), streaming: the tensor list comes
// from the config alone (Param::ShapesOnly), each tensor is read by one rank, and each rank
// holds at most about round_bytes of f32 tensors at a time (or its largest tensor), written
// round by round (ckpt::write_in_rounds); nobody holds the model. Weights in F32, BF16, F16,
// or FP8 (E4M3 with DeepSeek-V3's 128x128 weight_scale_inv blocks) become f32. Every check
// runs before anything is written: ConfigError naming config.json and the key where the
// architecture differs; CheckpointError naming the file and tensor for a missing tensor, a
// shape that differs, or a tensor the model does not have. The checkpoint appears complete
// or not at all.
ImportResult import_hf(const std::string& hf_dir, const std::string& out_dir, Communicator& comm,
                       double round_bytes = 1 << 30);

}  // namespace moe
