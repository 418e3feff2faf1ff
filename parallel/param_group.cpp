#include "parallel/param_group.h"

#include <algorithm>

namespace moe {

ParamGroup::ParamGroup(const ParamList& params, Communicator& comm, int zero, std::size_t bucket_bytes, Role role)
    : comm_(comm),
      zero_(zero),
      role_(role),
      bucket_(std::max<std::int64_t>(1, static_cast<std::int64_t>(bucket_bytes / sizeof(float)))) {
  MOE_CHECK(zero == 0 || zero == 1, ConfigError, "parallel.zero = {}: only stages 0 and 1 exist", zero);
  for (Param* p : params) {
    spans_.push_back({p, numel_, p->w.numel()});
    numel_ += p->w.numel();
  }
  const std::int64_t ranks = comm.size();
  shard_ = (numel_ + ranks - 1) / ranks;
  const Device dev = params.empty() ? Device::cpu : params.front()->w.device();  // the model's
  weights_ = Tensor::zeros({shard_ * ranks}, DType::f32, dev);
  if (trained()) grads_ = Tensor::zeros({shard_ * ranks}, DType::f32, dev);
  for (std::size_t i = 0; i < params.size(); ++i) {
    Param* p = params[i];
    const auto& s = spans_[i];
    Tensor w = weights_.rows(s.begin, s.size).view(p->w.shape());
    w.copy_from(p->w);  // keep the initial values and whatever was accumulated so far
    p->w = w;
    if (!trained()) {
      p->g = Tensor();  // frozen: no gradient is ever made
      continue;
    }
    Tensor g = grads_.rows(s.begin, s.size).view(p->w.shape());
    g.copy_from(p->g);
    p->g = g;
  }
  const std::int64_t held = !trained() ? 0 : zero_ == 1 ? shard_ : weights_.numel();
  m_ = Tensor::zeros({held}, DType::f32, dev);
  v_ = Tensor::zeros({held}, DType::f32, dev);
  if (zero_ == 1 && trained()) shard_grads_ = Tensor::zeros({shard_}, DType::f32, dev);
}

std::int64_t ParamGroup::buckets() const {
  if (!trained()) return 0;
  return zero_ == 1 ? 1 : (grads_.numel() + bucket_ - 1) / bucket_;
}

Tensor ParamGroup::gather_moment(const Tensor& moment) {
  Tensor full = Tensor::empty({weights_.numel()}, DType::f32, moment.device());
  if (zero_ == 1) comm_.all_gather(full, moment);
  else full.copy_from(moment);
  return full;
}

void ParamGroup::reduce_grads() {
  if (!trained()) return;
  if (zero_ == 1) return comm_.reduce_scatter_sum(shard_grads_, grads_);
  for (std::int64_t at = 0; at < grads_.numel(); at += bucket_) {
    Tensor bucket = grads_.rows(at, std::min(bucket_, grads_.numel() - at));
    comm_.all_reduce_sum(bucket);
  }
}

double ParamGroup::grad_sq_norm(const std::function<double(const Param&)>& weight) {
  if (!trained()) return 0.0;
  Tensor& g = zero_ == 1 ? shard_grads_ : grads_;
  // The whole buffer at once (one sum, one copy from a device), less what the weights take
  // off the parameters they scale.
  double sq = ops::sum_squares(g);
  if (weight) {
    const std::int64_t lo = moments_begin(), hi = lo + g.numel();
    for (const Span& s : spans_) {
      const std::int64_t a = std::max(lo, s.begin), b = std::min(hi, s.begin + s.size);
      if (const double w = weight(*s.param); a < b && w != 1) sq -= (1 - w) * ops::sum_squares(g.rows(a - lo, b - a));
    }
  }
  return zero_ == 1 ? comm_.all_reduce_sum(sq) : sq;
}

void ParamGroup::scale_grads(double s) {
  if (trained()) ops::scale(zero_ == 1 ? shard_grads_ : grads_, s);
}

void ParamGroup::step(const ops::AdamWSpec& spec, double weight_decay) {
  if (!trained()) return;
  // This rank updates flat elements [lo, hi): everything (zero 0) or its shard (zero 1);
  // each parameter's part of that range gets its own decay.
  const std::int64_t lo = moments_begin(), hi = lo + m_.numel();
  Tensor& g = zero_ == 1 ? shard_grads_ : grads_;
  for (const Span& s : spans_) {
    const std::int64_t a = std::max(lo, s.begin), b = std::min(hi, s.begin + s.size);
    if (a >= b) continue;
    Tensor w = weights_.rows(a, b - a), m = m_.rows(a - lo, b - a), v = v_.rows(a - lo, b - a),
           gs = g.rows(a - lo, b - a);
    ops::AdamWSpec sp = spec;
    sp.weight_decay = s.param->decay ? weight_decay : 0.0;
    ops::adamw_step(w, m, v, gs, sp);
  }
  if (zero_ == 1) {
    const Tensor mine =
        weights_.rows(lo, shard_).to(weights_.device());  // a copy: all-gather's input may not alias its output
    comm_.all_gather(weights_, mine);
  }
}

}  // namespace moe
