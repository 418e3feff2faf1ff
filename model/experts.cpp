#include "model/experts.h"

#include "kernels/ops.h"

namespace moe {

GroupedExperts::GroupedExperts(const std::string& p, std::int64_t first, std::int64_t local, std::int64_t total,
                               std::int64_t C, std::int64_t H, Gemm gemm)
    : C_(C),
      H_(H),
      gemm_(gemm),
      gate_(p + "experts.gate_proj.weight", {local, H, C}),
      up_(p + "experts.up_proj.weight", {local, H, C}),
      down_(p + "experts.down_proj.weight", {local, C, H}) {
  for (Param* q : {&gate_, &up_, &down_}) q->expert_begin = first, q->experts_total = total;
}

void GroupedExperts::forward(Tensor& y, const GemmInput& x, std::span<const std::int64_t> offsets, Saved& s) {
  const std::int64_t M = x.rows();
  const Device dev = y.device();
  s.x = x;
  s.gate = Tensor::empty({M, H_}, DType::f32, dev), s.up = Tensor::empty({M, H_}, DType::f32, dev);
  Tensor h = Tensor::empty({M, H_}, DType::f32, dev);
  project(s.gate, x, 0, offsets);
  project(s.up, x, 1, offsets);
  ops::swiglu_forward(h, s.gate, s.up);
  s.h = gemm_.keep(h);
  project(y, s.h, 2, offsets);
}

void GroupedExperts::backward(Tensor& dx, const Tensor& dy, std::span<const std::int64_t> offsets,
                              std::span<const std::int64_t> segments, const Saved& s) {
  const std::int64_t M = dy.size(0);
  const Device dev = dy.device();
  auto t = [&](std::int64_t width) { return Tensor::empty({M, width}, DType::f32, dev); };
  Tensor dh = t(H_), dgate = t(H_), dup = t(H_), dx_up = t(C_);
  project_backward(dh, dy, s.h, 2, offsets, segments);
  ops::swiglu_backward(dgate, dup, dh, s.gate, s.up);
  project_backward(dx, dgate, s.x, 0, offsets, segments);
  project_backward(dx_up, dup, s.x, 1, offsets, segments);
  ops::accumulate(dx, dx_up);
}

void GroupedExperts::add_replica_slots(std::int64_t R) {
  replica_w_.clear(), replica_g_.clear();
  for (Param* p : params()) {
    Shape s = p->shape();
    s[0] = R;
    replica_w_.push_back(Tensor::zeros(s, DType::f32, p->w.device()));
    replica_g_.push_back(p->g.defined() ? Tensor::zeros(s, DType::f32, p->w.device()) : Tensor());
  }
}

namespace {
// Grouped rows split at the first replica row m = offsets[El]: the owned experts' offsets and
// FP8 segments, and the replicas' counted from m.
struct ReplicaSplit {
  std::int64_t m;
  std::vector<std::int64_t> own, replica, own_segments, replica_segments;
};
ReplicaSplit split_at(std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments, std::size_t El) {
  ReplicaSplit r{offsets[El], {offsets.begin(), offsets.begin() + std::ptrdiff_t(El) + 1}, {}, {}, {}};
  for (std::size_t g = El; g < offsets.size(); ++g) r.replica.push_back(offsets[g] - r.m);
  for (const std::int64_t s : segments) {
    if (s <= r.m) r.own_segments.push_back(s);
    if (s >= r.m) r.replica_segments.push_back(s - r.m);
  }
  return r;
}
}  // namespace

void GroupedExperts::project(Tensor& y, const GemmInput& x, std::size_t i, std::span<const std::int64_t> offsets) {
  const Param& p = *params()[i];
  if (replica_w_.empty()) return gemm_.grouped_forward(y, x, p, offsets);
  const ReplicaSplit r = split_at(offsets, {}, std::size_t(p.shape()[0]));
  const std::int64_t rest = y.size(0) - r.m;
  Tensor own = y.rows(0, r.m), replica = y.rows(r.m, rest);
  gemm_.grouped_forward(own, x.slice(0, r.m), p, r.own);
  gemm_.grouped_forward(replica, x.slice(r.m, rest), replica_w_[i], r.replica);
}

void GroupedExperts::project_backward(Tensor& dx, const Tensor& dy, const GemmInput& x, std::size_t i,
                                      std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments) {
  Param& p = *params()[i];
  if (replica_w_.empty()) return gemm_.grouped_backward(dx, dy, x, p, offsets, segments);
  const ReplicaSplit r = split_at(offsets, segments, std::size_t(p.shape()[0]));
  const std::int64_t rest = dy.size(0) - r.m;
  Tensor dx_own = dx.rows(0, r.m), dx_replica = dx.rows(r.m, rest);
  gemm_.grouped_backward(dx_own, dy.rows(0, r.m), x.slice(0, r.m), p, r.own, r.own_segments);
  gemm_.grouped_backward(dx_replica, replica_g_[i], dy.rows(r.m, rest), x.slice(r.m, rest), replica_w_[i], r.replica,
                         r.replica_segments);
}

}  // namespace moe
