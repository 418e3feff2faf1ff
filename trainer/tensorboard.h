// TensorBoard event files written natively: TFRecord framing (length, masked CRC32C of the
// length, data, masked CRC32C of the data) around tensorflow.Event protos holding scalar and
// histogram summaries, encoded by hand (three small messages; field numbers from
// tensorflow/core/util/event.proto and core/framework/summary.proto). Read back by the real
// `tensorboard` package in a test.
#pragma once
#include <cstdint>
#include <fstream>
#include <span>
#include <string>

namespace moe {

// CRC-32C (Castagnoli), and TFRecord's masking of it.
std::uint32_t crc32c(const void* data, std::size_t n);
std::uint32_t masked_crc32c(const void* data, std::size_t n);

class EventWriter {
 public:
  // Creates DIR/events.out.tfevents.<seconds>.<host>.<pid>.moe and writes the file-version event.
  explicit EventWriter(const std::string& dir);
  void scalar(const std::string& tag, double value, std::int64_t step, double wall_time);
  // A histogram of `values` in `buckets` equal buckets between their min and max.
  void histogram(const std::string& tag, std::span<const double> values, std::int64_t step, double wall_time,
                 int buckets = 20);
  void flush() { out_.flush(); }
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& event);
  std::string path_;
  std::ofstream out_;
};

}  // namespace moe
