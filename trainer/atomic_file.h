// A small file of the trainer's (a config, a report, a safetensors export) written under
// PATH.tmp, checked, then renamed over PATH: it appears complete or not at all.
#pragma once
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe {

// header, then each tensor's bytes. CheckpointError naming the file where the write fails
// (a full disk); the previous PATH, if any, stays.
void write_atomically(const std::string& path, const std::string& header, const std::vector<const Tensor*>& data = {});

}  // namespace moe
