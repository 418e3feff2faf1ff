#include "model/mtp.h"

#include <fmt/format.h>

#include "kernels/ops.h"

namespace moe {

namespace {
std::string mtp_name(const ModelConfig& c, std::int64_t depth, const char* leaf) {
  return fmt::format("model.layers.{}.{}", c.n_layers + depth - 1, leaf);
}
}  // namespace

MtpLayer::MtpLayer(const ModelConfig& c, std::int64_t depth, const ExpertGroup& ep, const TensorParallel& tp, Gemm gemm)
    : eps_(c.norm_eps),
      gemm_(gemm),
      enorm_(mtp_name(c, depth, "enorm.weight"), {c.d_model}, false),
      hnorm_(mtp_name(c, depth, "hnorm.weight"), {c.d_model}, false),
      eh_proj_(mtp_name(c, depth, "eh_proj.weight"), {c.d_model, 2 * c.d_model}),
      head_norm_(mtp_name(c, depth, "shared_head.norm.weight"), {c.d_model}, false),
      block_(c, c.n_layers + depth - 1, ep, tp, gemm) {
  for (Param* p : {&enorm_, &hnorm_, &eh_proj_, &head_norm_}) tp.replicate(*p);
}

ParamList MtpLayer::params() {
  ParamList ps = {&enorm_, &hnorm_, &eh_proj_};
  for (Param* p : block_.params()) ps.push_back(p);
  ps.push_back(&head_norm_);
  return ps;
}

void MtpLayer::swap_saved(Saved& s) {
  Block::Saved block = std::move(s.block);
  std::swap(saved_, s);
  block_.swap_saved(block);
  s.block = std::move(block);
}

void MtpLayer::forward(Tensor& out, const Tensor& h, const Tensor& emb, const Sequences& seq, Tensor& aux_total) {
  const std::int64_t N = h.size(0), C = h.size(1);
  auto t = [&](Shape shape) { return Tensor::empty(std::move(shape), DType::f32, h.device()); };
  Saved& s = saved_;
  s.seq = seq;
  s.h = h, s.emb = emb, s.rh = t({N}), s.re = t({N}), s.y = t({N, C}), s.ry = t({N});
  Tensor e = t({N, C}), hn = t({N, C}), cat = t({N, 2 * C}), x = t({N, C});
  ops::rmsnorm_forward(e, s.re, emb, enorm_.w, eps_);
  ops::rmsnorm_forward(hn, s.rh, h, hnorm_.w, eps_);
  ops::copy_columns(cat, 0, e, 0, C);
  ops::copy_columns(cat, C, hn, 0, C);
  s.cat = gemm_.keep(cat);
  gemm_.forward(x, s.cat, eh_proj_);  // (N,C)
  block_.forward(s.y, x, seq, aux_total);
  if (recompute_) block_.release();
  ops::rmsnorm_forward(out, s.ry, s.y, head_norm_.w, eps_);
}

void MtpLayer::backward(Tensor& dh, Tensor& demb, const Tensor& dout, double aux_scale) {
  const Saved& s = saved_;
  const std::int64_t N = s.h.size(0), C = s.h.size(1);
  auto t = [&](Shape shape) { return Tensor::empty(std::move(shape), DType::f32, dout.device()); };
  Tensor dy = t({N, C}), dx = t({N, C}), dcat = t({N, 2 * C}), de = t({N, C}), dhn = t({N, C});
  ops::rmsnorm_backward(dy, head_norm_.g, dout, s.y, head_norm_.w, s.ry);
  if (recompute_) {  // dx: scratch for the output; the balance loss was counted
    if (!recompute_aux_.defined() || recompute_aux_.device() != dout.device())
      recompute_aux_ = Tensor::zeros({1}, DType::f64, dout.device());
    block_.forward(dx, block_.input(), s.seq, recompute_aux_);
  }
  block_.backward(dx, dy, aux_scale);
  if (recompute_) block_.release();
  gemm_.backward(dcat, dx, s.cat, eh_proj_);
  ops::copy_columns(de, 0, dcat, 0, C);
  ops::copy_columns(dhn, 0, dcat, C, C);
  ops::rmsnorm_backward(demb, enorm_.g, de, s.emb, enorm_.w, s.re);
  ops::rmsnorm_backward(dh, hnorm_.g, dhn, s.h, hnorm_.w, s.rh);
}

}  // namespace moe
