#include "kernels/residency.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <vector>

namespace moe {
namespace {
// Process-wide, not per thread: an op's OpenMP workers read its tensors too. Host code on
// another thread while an op runs is not caught (no such thread touches device tensors).
std::atomic<int> g_kernel_depth{0};
thread_local const char* t_op = "none";

std::mutex g_mutex;
TrafficReport g_report;

Traffic& site_locked() {
  const std::string site = in_kernel_scope() ? std::string(t_op) : fmt::format("host after {}", t_op);
  return g_report.by_site[site];
}
}  // namespace

KernelScope::KernelScope(const char* op) {
  t_op = op;
  g_kernel_depth.fetch_add(1, std::memory_order_relaxed);
}
KernelScope::~KernelScope() {
  if (active_) g_kernel_depth.fetch_sub(1, std::memory_order_relaxed);
}
bool in_kernel_scope() { return g_kernel_depth.load(std::memory_order_relaxed) > 0; }
const char* last_op() { return t_op; }

Traffic& Traffic::operator+=(const Traffic& o) {
  to_host += o.to_host, to_host_bytes += o.to_host_bytes;
  to_device += o.to_device, to_device_bytes += o.to_device_bytes;
  waits += o.waits;
  return *this;
}

std::string TrafficReport::describe() const {
  std::vector<std::pair<std::string, Traffic>> sites(by_site.begin(), by_site.end());
  std::stable_sort(sites.begin(), sites.end(),
                   [](const auto& a, const auto& b) { return a.second.to_host > b.second.to_host; });
  std::string out = fmt::format("{} copies to the host ({} B), {} to the device ({} B), {} waits", total.to_host,
                                total.to_host_bytes, total.to_device, total.to_device_bytes, total.waits);
  for (const auto& [site, t] : sites)
    out += fmt::format("\n  {}: {} to the host ({} B), {} to the device ({} B), {} waits", site, t.to_host,
                       t.to_host_bytes, t.to_device, t.to_device_bytes, t.waits);
  return out;
}

TrafficReport device_traffic() {
  std::lock_guard lock(g_mutex);
  return g_report;
}

void reset_device_traffic() {
  std::lock_guard lock(g_mutex);
  g_report = {};
}

namespace detail {
void count_copy(bool to_host, std::size_t bytes) {
  const Traffic one = to_host ? Traffic{.to_host = 1, .to_host_bytes = std::int64_t(bytes)}
                              : Traffic{.to_device = 1, .to_device_bytes = std::int64_t(bytes)};
  std::lock_guard lock(g_mutex);
  g_report.total += one;
  site_locked() += one;
}

void count_wait() {
  const Traffic one{.waits = 1};
  std::lock_guard lock(g_mutex);
  g_report.total += one;
  site_locked() += one;
}

void host_access(const char* verb, const std::string& tensor) {
  throw ResidencyError(fmt::format(
      "host code {} {}, which lives on the device (last op: {}): copy it with to_host(), or do the work in an op", verb,
      tensor, t_op));
}
}  // namespace detail

}  // namespace moe
