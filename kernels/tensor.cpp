#include "kernels/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <atomic>

namespace moe {
namespace {
std::int64_t count(const Shape& s, const char* what) {
  std::int64_t n = 1;
  for (auto d : s) {
    MOE_CHECK(d >= 0, ShapeError, "{}: negative dimension in shape {}", what, shape_str(s));
    n *= d;
  }
  return n;
}

struct MemoryCounter {
  std::atomic<std::int64_t> live{0}, peak{0};
  void add(std::int64_t bytes) {
    const std::int64_t now = live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::int64_t p = peak.load(std::memory_order_relaxed);
    while (now > p && !peak.compare_exchange_weak(p, now, std::memory_order_relaxed)) {}
  }
};
MemoryCounter& counter(Device d) {
  static MemoryCounter c[3];
  return c[static_cast<int>(d)];
}
}  // namespace

TensorMemory tensor_memory(Device device) {
  auto& c = counter(device);
  return {c.live.load(std::memory_order_relaxed), c.peak.load(std::memory_order_relaxed)};
}

void reset_tensor_memory_peak(Device device) {
  auto& c = counter(device);
  c.peak.store(c.live.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ",")); }

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  Tensor t;
  t.numel_ = count(shape, "Tensor::empty");
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  const auto bytes = static_cast<std::int64_t>(t.nbytes());
  void* p = device_alloc(device, t.nbytes());
  counter(device).add(bytes);
  t.storage_ = std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [device, bytes](std::byte* q) {
    counter(device).add(-bytes);
    device_free(device, q);
  });
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  Tensor t = empty(std::move(shape), dtype, device);
  t.zero();
  return t;
}

std::int64_t Tensor::size(int dim) const {
  int d = dim < 0 ? dim + ndim() : dim;
  MOE_CHECK(d >= 0 && d < ndim(), ShapeError, "dimension {} out of range for {}", dim, describe());
  return shape_[static_cast<std::size_t>(d)];
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined tensor";
  return fmt::format("{}{}@{}", dtype_name(dtype_), shape_str(shape_), device_name(device_));
}

void Tensor::check_dtype(DType want) const {
  MOE_CHECK(defined(), ShapeError, "access to an undefined tensor");
  MOE_CHECK(want == dtype_, ShapeError, "tensor {} accessed as {}", describe(), dtype_name(want));
}

Tensor Tensor::view(Shape shape) const {
  std::int64_t n = count(shape, "Tensor::view");
  MOE_CHECK(n == numel_, ShapeError, "cannot view {} as {}: {} vs {} elements", describe(), shape_str(shape), numel_,
            n);
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(std::int64_t begin, std::int64_t count_) const {
  MOE_CHECK(ndim() >= 1 && begin >= 0 && count_ >= 0 && begin + count_ <= shape_[0], ShapeError,
            "rows [{}, {}) out of range for {}", begin, begin + count_, describe());
  Tensor t = *this;
  t.shape_[0] = count_;
  t.numel_ = count_ == 0 ? 0 : numel_ / shape_[0] * count_;
  t.offset_ += static_cast<std::size_t>(begin) * (shape_[0] ? nbytes() / shape_[0] : 0);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  MOE_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, ShapeError, "copy_from: {} into {}", src.describe(),
            describe());
  device_copy(bytes(), device_, src.bytes(), src.device_, nbytes());
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  t.copy_from(*this);
  return t;
}

Tensor to_host(const Tensor& t) { return host_readable(t.device()) ? t : t.to(Device::cpu); }

void Tensor::zero() { device_memset0(device_, bytes(), nbytes()); }

void expect_ids(const char* op, const char* name, const Tensor& ids, std::int64_t lo, std::int64_t hi) {
  if (!host_readable(ids.device())) return;
  const std::int32_t* v = ids.data<std::int32_t>();
  for (std::int64_t n = 0; n < ids.numel(); ++n)
    MOE_CHECK(v[n] >= lo && v[n] < hi, ShapeError, "{}: {} {} at row {} outside [{}, {})", op, name, v[n], n, lo, hi);
}

void expect_positions(const char* op, const Tensor& positions, std::int64_t B, std::int64_t T, Device device) {
  if (!positions.defined()) return;
  expect_tensor(op, "positions", positions, DType::i32, {B * T});
  MOE_CHECK(positions.device() == device, ShapeError, "{}: positions are on {}, the data on {}", op,
            device_name(positions.device()), device_name(device));
  if (!host_readable(positions.device())) return;
  const std::int32_t* p = positions.data<std::int32_t>();
  for (std::int64_t n = 0; n < B * T; ++n)
    MOE_CHECK(p[n] == 0 || (n % T > 0 && p[n] == p[n - 1] + 1), ShapeError,
              "{}: position {} at token {} of sequence {}: a sequence starts at 0, a token is 0 or one past the "
              "token before it",
              op, p[n], n % T, n / T);
}

void expect_tensor(const char* op, const char* name, const Tensor& t, DType dtype, const Shape& shape) {
  MOE_CHECK(t.defined() && t.dtype() == dtype && t.shape() == shape, ShapeError, "{}: {} is {}, expected {}{}", op,
            name, t.describe(), dtype_name(dtype), shape_str(shape));
}

}  // namespace moe
