#include "model/ffn.h"

#include "kernels/ops.h"

namespace moe {

SwiGLU::SwiGLU(std::int64_t d_model, std::int64_t hidden, const std::string& p, const TensorParallel& tp, Gemm gemm)
    : C_(d_model), F_(tp.part(hidden)), gemm_(gemm), gate_(p + "gate_proj.weight", {F_, d_model}),
      up_(p + "up_proj.weight", {F_, d_model}), down_(p + "down_proj.weight", {d_model, F_}) {
  tp.split(gate_, 0, hidden);
  tp.split(up_, 0, hidden);
  tp.split(down_, 1, hidden);
}

void SwiGLU::forward(Tensor& out, const GemmInput& xin) {
  const std::int64_t N = xin.rows();
  const Device dev = xin.x.device();
  x = xin;
  g = Tensor::empty({N, F_}, DType::f32, dev);
  u = Tensor::empty({N, F_}, DType::f32, dev);
  Tensor a = Tensor::empty({N, F_}, DType::f32, dev);
  gemm_.forward(g, x, gate_.w);
  gemm_.forward(u, x, up_.w);
  ops::swiglu_forward(a, g, u);
  h = gemm_.keep(a);
  gemm_.forward(out, h, down_.w);
}

void SwiGLU::backward(Tensor& dx, const Tensor& dout) {
  const std::int64_t N = x.rows();
  const Device dev = dout.device();
  Tensor dh = Tensor::empty({N, F_}, DType::f32, dev), dg = Tensor::empty({N, F_}, DType::f32, dev),
         du = Tensor::empty({N, F_}, DType::f32, dev), tmp = Tensor::empty({N, C_}, DType::f32, dev);
  gemm_.backward(dh, down_.g, dout, h, down_.w);
  ops::swiglu_backward(dg, du, dh, g, u);
  gemm_.backward(dx, gate_.g, dg, x, gate_.w);
  gemm_.backward(tmp, up_.g, du, x, up_.w);
  ops::accumulate(dx, tmp);
}

}  // namespace moe
