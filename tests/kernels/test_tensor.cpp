#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>

#include "kernels/ops.h"
#include "kernels/tensor.h"

using namespace moe;

TEST_CASE("tensor: views and row slices share storage, copies are explicit", "[tensor]") {
  Tensor t = Tensor::zeros({4, 3}, DType::f32);
  CHECK(t.describe() == "f32[4,3]@cpu");
  CHECK(t.nbytes() == 48);
  Tensor v = t.view({2, 6});
  Tensor r = t.rows(1, 2);
  r.data<float>()[0] = 5.f;  // element (1,0) of t
  CHECK(t.data<float>()[3] == 5.f);
  CHECK(v.data<float>()[3] == 5.f);
  Tensor c = t.to(Device::cpu);  // a copy, not a view
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

TEST_CASE("sim device: host code may not touch its memory, ops may, and copies are counted", "[tensor][residency]") {
  Tensor h = Tensor::empty({2, 3}, DType::f32);
  for (int i = 0; i < 6; ++i) h.data<float>()[i] = float(i);
  reset_device_traffic();
  const Tensor d = h.to(Device::sim);
  CHECK(d.device() == Device::sim);
  CHECK_THROWS_AS(d.data<float>(), ResidencyError);
  CHECK_THROWS_WITH(d.raw(), Catch::Contains("f32[2,3]@sim"));
  Tensor y = Tensor::zeros({2, 3}, DType::f32, Device::sim);
  ops::accumulate(y, d, 2.0);  // an op reaches it
  CHECK_THROWS_WITH(y.data<float>(), Catch::Contains("last op: accumulate"));
  const Tensor back = to_host(y);
  for (int i = 0; i < 6; ++i) CHECK(back.data<float>()[i] == 2.0f * float(i));
  synchronize(Device::sim);
  const TrafficReport r = device_traffic();
  CHECK(r.total.to_device == 1);
  CHECK(r.total.to_device_bytes == 24);
  CHECK(r.total.to_host == 1);
  CHECK(r.total.waits == 1);
  CHECK(r.by_site.at("host after accumulate").to_host == 1);
  // The CPU's own tensors: nothing counted.
  reset_device_traffic();
  Tensor c = h.to(Device::cpu);
  ops::accumulate(c, h);
  CHECK(device_traffic().total.to_host == 0);
  CHECK(device_traffic().total.to_device == 0);
}

TEST_CASE("sum_into adds f32 values to an f64 total in index order, on the sim device too", "[tensor][ops]") {
  Tensor x = Tensor::empty({5}, DType::f32);
  const float v[] = {1e8f, 1.f, -1e8f, 0.5f, 3.f};
  std::copy(std::begin(v), std::end(v), x.data<float>());
  double want = 2.0;
  for (float f : v) want += double(f);  // the running sum the op must reproduce
  for (const Device d : {Device::cpu, Device::sim}) {
    Tensor total = Tensor::zeros({1}, DType::f64);
    total.data<double>()[0] = 2.0;
    Tensor td = total.to(d);
    ops::sum_into(td, x.to(d));
    CHECK(to_host(td).data<double>()[0] == want);
  }
  Tensor bad = Tensor::zeros({1}, DType::f32);
  CHECK_THROWS_AS(ops::sum_into(bad, x), ShapeError);
}

TEST_CASE("MOE_ASSERT names the file, line and condition of a broken invariant", "[tensor]") {
  const int rows = 3;
  try {
    MOE_ASSERT(rows < 2, "{} rows", rows);
    FAIL("no throw");
  } catch (const InternalError& e) {
    CHECK_THAT(e.what(), Catch::Contains("test_tensor.cpp:") && Catch::Contains("internal error: 3 rows (rows < 2)"));
  }
  MOE_ASSERT(rows > 2, "unused");  // holds: no throw
}
