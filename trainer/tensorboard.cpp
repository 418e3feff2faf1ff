#include "trainer/tensorboard.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <vector>

#include "kernels/error.h"

namespace moe {
namespace {

// Protobuf wire format: a key is (field << 3 | wire type); 0 varint, 1 fixed64, 2 bytes, 5 fixed32.
void varint(std::string& s, std::uint64_t v) {
  for (; v >= 0x80; v >>= 7) s.push_back(static_cast<char>((v & 0x7f) | 0x80));
  s.push_back(static_cast<char>(v));
}
template <class T>
void fixed(std::string& s, T v) {  // little-endian (x86, arm64)
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}
void key(std::string& s, int field, int wire) { varint(s, static_cast<std::uint64_t>(field << 3 | wire)); }
void f_double(std::string& s, int field, double v) { key(s, field, 1), fixed(s, v); }
void f_float(std::string& s, int field, float v) { key(s, field, 5), fixed(s, v); }
void f_int64(std::string& s, int field, std::int64_t v) { key(s, field, 0), varint(s, static_cast<std::uint64_t>(v)); }
void f_bytes(std::string& s, int field, const std::string& v) {
  key(s, field, 2), varint(s, v.size());
  s += v;
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3 | Summary summary = 5; }
std::string event(double wall_time, std::int64_t step) {
  std::string e;
  f_double(e, 1, wall_time);
  f_int64(e, 2, step);
  return e;
}
// Summary { repeated Value value = 1; }, Value { string tag = 1; float simple_value = 2 | HistogramProto histo = 5; }
std::string summary(const std::string& tag, const std::string& payload) {
  std::string v, s;
  f_bytes(v, 1, tag);
  v += payload;
  f_bytes(s, 1, v);
  return s;
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t n) {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected Castagnoli polynomial
      t[i] = c;
    }
    return t;
  }();
  std::uint32_t c = 0xFFFFFFFFu;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::uint32_t masked_crc32c(const void* data, std::size_t n) {
  const std::uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

EventWriter::EventWriter(const std::string& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "host";
  gethostname(host, sizeof(host) - 1);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  path_ = fmt::format("{}/events.out.tfevents.{}.{}.{}.moe", dir,
                      std::chrono::duration_cast<std::chrono::seconds>(now).count(), host, getpid());
  out_.open(path_, std::ios::binary | std::ios::app);
  MOE_CHECK(out_.good(), DataError, "{}: cannot write TensorBoard events", path_);
  std::string e = event(std::chrono::duration<double>(now).count(), 0);
  f_bytes(e, 3, "brain.Event:2");
  record(e);
}

void EventWriter::record(const std::string& data) {
  const std::uint64_t n = data.size();
  std::string r;
  fixed(r, n);
  fixed(r, masked_crc32c(r.data(), 8));
  r += data;
  fixed(r, masked_crc32c(data.data(), data.size()));
  out_.write(r.data(), static_cast<std::streamsize>(r.size()));
}

void EventWriter::scalar(const std::string& tag, double value, std::int64_t step, double wall_time) {
  std::string v;
  f_float(v, 2, static_cast<float>(value));
  std::string e = event(wall_time, step);
  f_bytes(e, 5, summary(tag, v));
  record(e);
}

void EventWriter::histogram(const std::string& tag, std::span<const double> values, std::int64_t step, double wall_time,
                            int buckets) {
  if (values.empty()) return;
  const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
  double sum = 0, sq = 0;
  for (double x : values) sum += x, sq += x * x;
  // Buckets (edge[i-1], edge[i]]; the first takes everything up to its edge.
  const double width = (*hi - *lo) / buckets;
  std::vector<double> edges, counts(static_cast<std::size_t>(buckets), 0);
  for (int i = 1; i <= buckets; ++i) edges.push_back(i == buckets || width == 0 ? *hi : *lo + width * i);
  for (double x : values) {
    const auto b =
        width > 0 ? std::min<std::size_t>(static_cast<std::size_t>((x - *lo) / width), counts.size() - 1) : 0;
    counts[b] += 1;
  }
  // HistogramProto { double min = 1, max = 2, num = 3, sum = 4, sum_squares = 5;
  //                  repeated double bucket_limit = 6 [packed], bucket = 7 [packed]; }
  std::string h, packed_edges, packed_counts;
  f_double(h, 1, *lo);
  f_double(h, 2, *hi);
  f_double(h, 3, double(values.size()));
  f_double(h, 4, sum);
  f_double(h, 5, sq);
  for (double x : edges) fixed(packed_edges, x);
  for (double x : counts) fixed(packed_counts, x);
  f_bytes(h, 6, packed_edges);
  f_bytes(h, 7, packed_counts);
  std::string v;
  f_bytes(v, 5, h);
  std::string e = event(wall_time, step);
  f_bytes(e, 5, summary(tag, v));
  record(e);
}

}  // namespace moe
