#include "trainer/safetensors.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "kernels/fp8.h"

namespace moe {

namespace {
float from_f16(std::uint16_t h) {  // IEEE half: sign, 5 exponent bits (bias 15), 10 fraction bits
  const std::uint32_t sign = std::uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp == 0) {  // zero or subnormal: frac * 2^-24
    const float v = std::ldexp(float(frac), -24);
    return sign ? -v : v;
  }
  const std::uint32_t bits =
      exp == 0x1f ? sign | 0x7f800000u | (frac << 13) : sign | ((exp + 112) << 23) | (frac << 13);
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
std::size_t dtype_bytes(const std::string& t) {
  if (t == "F32") return 4;
  if (t == "BF16" || t == "F16") return 2;
  if (t == "F8_E4M3") return 1;
  return 0;
}
}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const auto fail = [&](const std::string& what) { return CheckpointError(fmt::format("{}: {}", path, what)); };
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw fail(std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  ::fstat(fd, &st);
  size_ = std::size_t(st.st_size);
  if (size_ >= 8) map_ = static_cast<const unsigned char*>(::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0));
  ::close(fd);
  if (size_ < 8 || map_ == MAP_FAILED) {
    map_ = nullptr;
    throw fail("not a safetensors file (shorter than its header size)");
  }
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | map_[i];
  if (n > size_ - 8) throw fail(fmt::format("header of {} bytes in a file of {}", n, size_));
  data_ = 8 + std::size_t(n);
  const auto header = nlohmann::json::parse(map_ + 8, map_ + data_, nullptr, false);
  if (!header.is_object()) throw fail("the header is not a JSON object");
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      Entry t{e.at("dtype").get<std::string>(), e.at("shape").get<Shape>(), e.at("data_offsets").at(0),
              e.at("data_offsets").at(1)};
      std::int64_t count = 1;
      for (auto d : t.shape) count *= d;
      const std::size_t b = dtype_bytes(t.dtype);
      if (t.end < t.begin || t.end > size_ - data_ || (b && t.end - t.begin != std::uint64_t(count) * b))
        throw fail(fmt::format("tensor {}: bytes [{}, {}) do not hold {} {} values inside the file", name, t.begin,
                               t.end, count, t.dtype));
      entries_.emplace(name, std::move(t));
    } catch (const nlohmann::json::exception&) {
      throw fail(fmt::format("tensor {}: the header entry lacks dtype, shape or data_offsets", name));
    }
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<unsigned char*>(map_), size_);
}

Tensor SafetensorsFile::read(const std::string& name) const {
  const auto it = entries_.find(name);
  MOE_CHECK(it != entries_.end(), CheckpointError, "{}: no tensor {}", path_, name);
  const Entry& e = it->second;
  Tensor t = Tensor::empty(e.shape, DType::f32);
  float* out = t.data<float>();
  const unsigned char* src = map_ + data_ + e.begin;
  const std::int64_t n = t.numel();
  if (e.dtype == "F32") {
    std::memcpy(out, src, std::size_t(n) * 4);
  } else if (e.dtype == "BF16" || e.dtype == "F16") {
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = e.dtype == "BF16" ? from_bf16(bf16{h}) : from_f16(h);
    }
  } else if (e.dtype == "F8_E4M3") {
    for (std::int64_t i = 0; i < n; ++i) out[i] = from_e4m3(fp8_e4m3{src[i]});
  } else {
    throw CheckpointError(
        fmt::format("{}: tensor {} is {}; moe reads F32, BF16, F16 and F8_E4M3", path_, name, e.dtype));
  }
  // Read once: its pages leave this process's memory (a streaming import of a model larger
  // than memory keeps only what it converts).
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto lo = reinterpret_cast<std::uintptr_t>(src) / page * page,
             hi = reinterpret_cast<std::uintptr_t>(map_ + data_ + e.end) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
  return t;
}

std::vector<std::string> safetensors_files(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(index)) {
    std::ifstream in(index);
    const auto j = nlohmann::json::parse(in, nullptr, false);
    MOE_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(), CheckpointError,
              "{}: no weight_map", index.string());
    std::set<std::string> files;
    for (const auto& [name, file] : j["weight_map"].items()) {
      const fs::path shard = fs::path(dir) / file.get<std::string>();
      MOE_CHECK(fs::exists(shard), CheckpointError, "{}: shard {} (of {}) is missing; copy the whole model directory",
                index.string(), file.get<std::string>(), name);
      files.insert(shard.string());
    }
    return {files.begin(), files.end()};
  }
  const fs::path single = fs::path(dir) / "model.safetensors";
  MOE_CHECK(fs::exists(single), CheckpointError,
            "{}: neither model.safetensors nor model.safetensors.index.json; is this a Hugging Face model directory?",
            dir);
  return {single.string()};
}

}  // namespace moe
