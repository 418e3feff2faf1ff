// Residency: which code may touch device memory, and how often the host and a device talk.
//
// Host code must not read or write a device tensor's bytes: on a GPU that is a crash (or a
// silent read of garbage through a stale pointer). Only an op's kernels reach device memory,
// and an op says so by holding a KernelScope while its kernels run (detail::on_gpu in
// kernels/ops/boundary.h opens one). On the sim device (kernels/device.h) Tensor::data() and
// raw() outside a KernelScope throw ResidencyError naming the tensor and the last op, so CI
// finds host code that would dereference GPU memory without a GPU.
//
// Every copy between the host and a device, and every host wait on a device, is counted
// (on cuda as on sim), per site: the op during which it happened, or "host after <op>" for
// host code. A copy to the host is a wait too (the host needs the bytes): it is counted once,
// as a copy. Tests and benchmarks read the counts per step; a step's budget is a handful of
// device->host copies (routing counts, the loss).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "kernels/error.h"

namespace moe {

class ResidencyError : public Error {
  using Error::Error;
};  // host code touched device memory

// Held by an op while its kernels run: device tensors' bytes are reachable through data()
// and raw() meanwhile, on every thread (the CPU kernels' OpenMP workers). Nests.
class KernelScope {
 public:
  explicit KernelScope(const char* op);
  ~KernelScope();
  KernelScope(KernelScope&& o) noexcept : active_(std::exchange(o.active_, false)) {}
  KernelScope(const KernelScope&) = delete;
  KernelScope& operator=(const KernelScope&) = delete;
  KernelScope& operator=(KernelScope&&) = delete;

 private:
  bool active_ = true;
};
bool in_kernel_scope();
// The op whose kernels ran last on this thread ("none" before the first).
const char* last_op();

struct Traffic {
  std::int64_t to_host = 0, to_host_bytes = 0;      // device -> host copies
  std::int64_t to_device = 0, to_device_bytes = 0;  // host -> device copies
  std::int64_t waits = 0;                           // synchronize() on a device
  Traffic& operator+=(const Traffic& o);
};
struct TrafficReport {
  Traffic total;
  std::map<std::string, Traffic> by_site;  // "rmsnorm_forward", "host after router_forward", ...
  std::string describe() const;            // one line per site, most copies to the host first
};
// Counted since the last reset (process-wide).
TrafficReport device_traffic();
void reset_device_traffic();

namespace detail {
void count_copy(bool to_host, std::size_t bytes);
void count_wait();
// Throws ResidencyError: host code `verb` ("touched") the tensor described by `tensor`.
[[noreturn]] void host_access(const char* verb, const std::string& tensor);
}  // namespace detail

}  // namespace moe
