#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "kernels/tensor.h"

using namespace moe;

TEST_CASE("tensor: views and row slices share storage, copies are explicit", "[tensor]") {
  Tensor t = Tensor::zeros({4, 3}, DType::f32);
  CHECK(t.describe() == "f32[4,3]@cpu");
  CHECK(t.nbytes() == 48);
  Tensor v = t.view({2, 6});
  Tensor r = t.rows(1, 2);
  r.data<float>()[0] = 5.f;                   // element (1,0) of t
  CHECK(t.data<float>()[3] == 5.f);
  CHECK(v.data<float>()[3] == 5.f);
  Tensor c = t.to(Device::cpu);               // a copy, not a view
  c.data<float>()[3] = 7.f;
  CHECK(t.data<float>()[3] == 5.f);
  CHECK(r.shape() == Shape{2, 3});
}

TEST_CASE("tensor: misuse is a ShapeError naming the tensor", "[tensor]") {
  Tensor t = Tensor::zeros({4, 3}, DType::f32);
  CHECK_THROWS_WITH(t.view({5, 3}), Catch::Contains("cannot view f32[4,3]@cpu as [5,3]"));
  CHECK_THROWS_WITH(t.data<double>(), Catch::Contains("f32[4,3]@cpu accessed as f64"));
  CHECK_THROWS_AS(t.rows(3, 2), ShapeError);
  Tensor u = Tensor::zeros({3, 4}, DType::f32);
  CHECK_THROWS_AS(u.copy_from(t), ShapeError);
}

TEST_CASE("tensor: a CUDA tensor without a GPU build or device fails loudly", "[tensor]") {
  if (cuda_device_count() > 0) return;  // covered by the gpu-labelled tests
  CHECK_THROWS_AS(Tensor::empty({2}, DType::f32, Device::cuda), DeviceError);
}

TEST_CASE("bf16: round to nearest even, NaN preserved", "[tensor][dtype]") {
  CHECK(from_bf16(to_bf16(1.0f)) == 1.0f);
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to the even mantissa (1).
  CHECK(from_bf16(to_bf16(1.0f + std::ldexp(1.0f, -8))) == 1.0f);
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up to the even one.
  CHECK(from_bf16(to_bf16(1.0f + 3 * std::ldexp(1.0f, -8))) == 1.0f + std::ldexp(1.0f, -6));
  CHECK(std::isnan(from_bf16(to_bf16(std::numeric_limits<float>::quiet_NaN()))));
  CHECK(std::isinf(from_bf16(to_bf16(std::numeric_limits<float>::infinity()))));
}
