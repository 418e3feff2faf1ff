#include "model/ffn.h"

#include "kernels/ops.h"

namespace moe {

SwiGLU::SwiGLU(std::int64_t d_model, std::int64_t hidden, const std::string& p, const TensorParallel& tp, Gemm gemm)
    : C_(d_model),
      F_(tp.part(hidden)),
      gemm_(gemm),
      gate_proj_(p + "gate_proj.weight", {F_, d_model}),
      up_proj_(p + "up_proj.weight", {F_, d_model}),
      down_proj_(p + "down_proj.weight", {d_model, F_}) {
  tp.split(gate_proj_, 0, hidden);
  tp.split(up_proj_, 0, hidden);
  tp.split(down_proj_, 1, hidden);
}

void SwiGLU::forward(Tensor& out, const GemmInput& x) {
  const std::int64_t N = x.rows();
  const Device dev = x.x.device();
  Saved& s = saved_;
  s.x = x;
  s.gate = Tensor::empty({N, F_}, DType::f32, dev);
  s.up = Tensor::empty({N, F_}, DType::f32, dev);
  Tensor a = Tensor::empty({N, F_}, DType::f32, dev);
  gemm_.forward(s.gate, x, gate_proj_);
  gemm_.forward(s.up, x, up_proj_);
  ops::swiglu_forward(a, s.gate, s.up);
  s.h = gemm_.keep(a);
  gemm_.forward(out, s.h, down_proj_);
}

void SwiGLU::backward(Tensor& dx, const Tensor& dout) {
  const Saved& s = saved_;
  const std::int64_t N = s.x.rows();
  const Device dev = dout.device();
  Tensor dh = Tensor::empty({N, F_}, DType::f32, dev), dgate = Tensor::empty({N, F_}, DType::f32, dev),
         dup = Tensor::empty({N, F_}, DType::f32, dev), tmp = Tensor::empty({N, C_}, DType::f32, dev);
  gemm_.backward(dh, dout, s.h, down_proj_);
  ops::swiglu_backward(dgate, dup, dh, s.gate, s.up);
  gemm_.backward(dx, dgate, s.x, gate_proj_);
  gemm_.backward(tmp, dup, s.x, up_proj_);
  ops::accumulate(dx, tmp);
}

}  // namespace moe
