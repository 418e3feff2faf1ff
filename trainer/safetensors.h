// Reading Hugging Face's safetensors files (an 8-byte little-endian header size, a JSON
// header naming each tensor's dtype, shape and byte range, then the data), memory-mapped. No
// C++ library for the format is packaged here; it is small enough to read directly, with
// every offset checked against the file. Tensors come out as f32 host tensors.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe {

class SafetensorsFile {
 public:
  // CheckpointError naming the file for anything that is not a well-formed safetensors file.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  struct Entry {
    std::string dtype;  // "F32", "BF16", "F16", "F8_E4M3", ...
    Shape shape;
    std::uint64_t begin = 0, end = 0;  // bytes into the data section
  };
  const std::map<std::string, Entry>& entries() const { return entries_; }
  // The tensor as f32 (F32, BF16, F16 and F8_E4M3 codes as their values; CheckpointError for
  // other dtypes).
  Tensor read(const std::string& name) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* map_ = nullptr;
  std::size_t size_ = 0, data_ = 0;  // file bytes; where the data section starts
  std::map<std::string, Entry> entries_;
};

// The tensor files of a Hugging Face model directory: model.safetensors.index.json's shards, or
// the single model.safetensors. CheckpointError where neither is there.
std::vector<std::string> safetensors_files(const std::string& dir);

}  // namespace moe
