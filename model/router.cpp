#include "model/router.h"

#include <cmath>

namespace moe {

Router::Router(const ModelConfig& c, const std::string& p, const TensorParallel& tp)
    : E_(c.routed_experts),
      K_(c.top_k),
      spec_{.kind = c.router == RouterType::sigmoid ? ops::RouterKind::sigmoid : ops::RouterKind::softmax,
            .top_k = static_cast<int>(c.top_k),
            .n_groups = static_cast<int>(c.n_groups),
            .topk_groups = static_cast<int>(c.topk_groups),
            .normalize = c.router_normalize,
            .scaling = c.routed_scaling_factor},
      capacity_factor_(c.capacity_factor),
      aux_coef_(c.aux_loss_coef),
      z_coef_(c.router_z_loss_coef),
      tp_rank_(tp.rank),
      weight_(p + "gate.weight", {E_, c.d_model}),
      bias_name_(p + "gate.e_score_correction_bias"),
      bias_(Tensor::zeros({E_}, DType::f32)) {
  tp.replicate(weight_, /*partial_grad=*/true);
}

std::int64_t Router::capacity(std::int64_t N) const {
  if (capacity_factor_ <= 0) return -1;
  return static_cast<std::int64_t>(std::ceil(capacity_factor_ * double(N * K_) / double(E_)));
}

Routing Router::forward(const Tensor& x, std::int64_t T, std::int64_t n0, std::int64_t n1, Tensor counts,
                        Tensor& aux_total) {
  const std::int64_t N = x.size(0);
  const Device dev = x.device();
  if (bias_.device() != dev) bias_ = bias_.to(dev);
  Routing r{.scores = Tensor::empty({N, E_}, DType::f32, dev),
            .index = Tensor::empty({N, K_}, DType::i32, dev),
            .gates = Tensor::empty({N, K_}, DType::f32, dev),
            .kept = Tensor::empty({N, K_}, DType::i32, dev),
            .f = Tensor(),
            .logits = Tensor(),
            .z_lse = Tensor(),
            .T = T};
  Tensor logits = Tensor::empty({N, E_}, DType::f32, dev);
  ops::matmul_forward(logits, x, weight_.w);  // (N,E)
  ops::router_forward(r.scores, r.index, r.gates, logits, bias_, spec_);
  ops::route_capacity(r.kept, counts, r.index, capacity(N), n0, n1);  // in token order
  if (counts_balance_loss()) {
    r.f = Tensor::empty({N / T, E_}, DType::f64, dev);
    ops::balance_loss_forward(aux_total, r.f, r.scores, r.index, T, aux_coef_);
  }
  if (counts_z_loss()) {
    r.logits = logits, r.z_lse = Tensor::empty({N}, DType::f32, dev);
    ops::router_z_loss_forward(aux_total, r.z_lse, logits, T, z_coef_);
  }
  return r;
}

void Router::backward(Tensor& dx, const Tensor& dgates, const Tensor& x, const Routing& r, double aux_scale) {
  const std::int64_t N = x.size(0);
  const Device dev = x.device();
  Tensor dscores;  // the balance loss's gradient on the scores
  if (r.f.defined() && aux_scale != 0) {
    dscores = Tensor::empty({N, E_}, DType::f32, dev);
    ops::balance_loss_backward(dscores, r.f, r.scores, r.T, aux_coef_, aux_scale);
  }
  Tensor dlogits = Tensor::empty({N, E_}, DType::f32, dev), dxr = Tensor::empty(x.shape(), DType::f32, dev);
  ops::router_backward(dlogits, dgates, r.scores, r.index, spec_, dscores);
  if (r.z_lse.defined() && aux_scale != 0)
    ops::router_z_loss_backward(dlogits, r.logits, r.z_lse, r.T, z_coef_, aux_scale);
  ops::matmul_backward(dxr, weight_.g, dlogits, x, weight_.w);
  ops::accumulate(dx, dxr);
}

void Router::update_bias(const std::vector<double>& global_load, double rate) {
  double mean = 0;
  for (double l : global_load) mean += l / double(E_);
  // b += float(rate) * sign on b's device (the sign exact in f32, so float(rate * sign)):
  // the signs go over, nothing comes back.
  Tensor sign = Tensor::empty({E_}, DType::f32);
  for (std::int64_t e = 0; e < E_; ++e) {
    const double diff = mean - global_load[static_cast<std::size_t>(e)];
    sign.data<float>()[e] = static_cast<float>((diff > 0) - (diff < 0));
  }
  ops::accumulate(bias_, sign.device() == bias_.device() ? sign : sign.to(bias_.device()), rate);
}

}  // namespace moe
