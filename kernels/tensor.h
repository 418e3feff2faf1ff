// Tensor: a shape, a dtype and a reference to storage on one device. Always contiguous
// (row-major). Copies are explicit (copy_from, to); views (view, rows) share storage.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/residency.h"

namespace moe {

using Shape = std::vector<std::int64_t>;

std::string shape_str(const Shape& s);  // "[2,3,4]"

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::cpu);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  std::int64_t size(int dim) const;  // negative dims count from the end
  std::int64_t numel() const { return numel_; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  std::string describe() const;  // e.g. "f32[4,7]@cpu", for error messages

  // Typed pointer to the first element. Checks the dtype, and residency: a CUDA kernel
  // launcher takes data<float>() of a device tensor inside its op (a KernelScope); host code
  // outside one that asks for a sim tensor's bytes gets ResidencyError (kernels/residency.h).
  template <class T>
  T* data() {
    check_dtype(dtype_of<T>::value);
    check_residency();
    return reinterpret_cast<T*>(bytes());
  }
  template <class T>
  const T* data() const {
    check_dtype(dtype_of<T>::value);
    check_residency();
    return reinterpret_cast<const T*>(bytes());
  }
  void* raw() { return check_residency(), bytes(); }
  const void* raw() const { return check_residency(), bytes(); }

  // Where the first element is, as an identity (sets of seen buffers, aliasing checks), not
  // for access: allowed on any device, never to be dereferenced.
  const void* address() const { return bytes(); }
  bool same_start(const Tensor& o) const { return bytes() == o.bytes(); }

  Tensor view(Shape shape) const;                             // same elements, new shape
  Tensor rows(std::int64_t begin, std::int64_t count) const;  // a slice of dim 0, no copy

  void copy_from(const Tensor& src);  // same shape and dtype; any pair of devices
  Tensor to(Device device) const;     // a new tensor on `device` holding a copy
  void zero();

 private:
  void check_dtype(DType want) const;
  void check_residency() const {
    if (device_ == Device::sim && !in_kernel_scope()) detail::host_access("touched", describe());
  }
  std::byte* bytes() const { return storage_.get() + offset_; }
  std::shared_ptr<std::byte> storage_;
  std::size_t offset_ = 0;  // bytes
  Shape shape_;
  std::int64_t numel_ = 0;
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu;
};

// t itself when it is on the CPU (no copy), else a host copy: for reading a device tensor's
// values (losses, routing choices) on the host.
Tensor to_host(const Tensor& t);

// Bytes held by live Tensors on a device (views share their storage's count), and the most
// held at once since the last reset: what a run actually allocates, which `moe plan` predicts.
struct TensorMemory {
  std::int64_t live = 0, peak = 0;
};
TensorMemory tensor_memory(Device device = Device::cpu);
void reset_tensor_memory_peak(Device device = Device::cpu);  // peak := live

// Boundary validation of index values: every element of ids (i32, host-readable; other
// devices are skipped, their ids checked on the host before they went over) in [lo, hi).
// ShapeError "op: name 7 at row 3 outside [0, 5)".
void expect_ids(const char* op, const char* name, const Tensor& ids, std::int64_t lo, std::int64_t hi);
// Document positions of B sequences of T tokens (attention's and RoPE's, kernels/ops.h):
// undefined (positions 0..T-1), or (B*T) i32 on `device` where each sequence starts at 0 and
// each next token is 0 (a new document) or one past its predecessor. Values are checked where
// the host can read them, as expect_ids.
void expect_positions(const char* op, const Tensor& positions, std::int64_t B, std::int64_t T, Device device);

// Boundary validation helper for ops: throws ShapeError "op: name is f32[2,3]@cpu, expected ...".
void expect_tensor(const char* op, const char* name, const Tensor& t, DType dtype, const Shape& shape);

}  // namespace moe
