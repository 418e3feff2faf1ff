#include "tests/support/testing.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <catch2/catch.hpp>

namespace moe::testing {

Tensor random(const Shape& shape, std::uint64_t seed, double scale, DType dtype) {
  Tensor t = Tensor::empty(shape, DType::f64);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(-scale, scale);
  double* p = t.data<double>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return dtype == DType::f64 ? t : cast(t, dtype);
}

Tensor random_ints(const Shape& shape, std::uint64_t seed, int lo, int hi) {
  Tensor t = Tensor::empty(shape, DType::i32);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> u(lo, hi);
  auto* p = t.data<std::int32_t>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return t;
}

Tensor ints(const std::vector<std::int32_t>& v, Shape shape) {
  Tensor t = Tensor::empty(shape.empty() ? Shape{std::ssize(v)} : std::move(shape), DType::i32);
  std::copy(v.begin(), v.end(), t.data<std::int32_t>());
  return t;
}

std::vector<std::int32_t> values(const Tensor& t) {
  const std::int32_t* p = t.data<std::int32_t>();
  return {p, p + t.numel()};
}

Tensor cast(const Tensor& t, DType dtype) {
  Tensor out = Tensor::empty(t.shape(), dtype);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::f64) out.data<double>()[i] = at(t, i);
    else out.data<float>()[i] = static_cast<float>(at(t, i));
  }
  return out;
}

double at(const Tensor& t, std::int64_t i) {
  return t.dtype() == DType::f64 ? t.data<double>()[i] : static_cast<double>(t.data<float>()[i]);
}

double dot(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  double s = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) s += at(a, i) * at(b, i);
  return s;
}

double max_rel_err(const Tensor& a, const Tensor& b, double floor) {
  REQUIRE(a.shape() == b.shape());
  double err = 0, scale = floor;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    err = std::max(err, std::abs(at(a, i) - at(b, i)));
    scale = std::max(scale, std::abs(at(b, i)));
  }
  return err / scale;
}

Tensor numeric_grad(Tensor& x, const std::function<double()>& loss, double h) {
  Tensor g = Tensor::empty(x.shape(), DType::f64);
  double* p = x.data<double>();
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = loss();
    p[i] = keep - h;
    const double down = loss();
    p[i] = keep;
    g.data<double>()[i] = (up - down) / (2 * h);
  }
  loss();  // leave the forward's outputs as they were for x
  return g;
}

void check_f32_matches_f64(const std::function<std::vector<Tensor>(DType)>& run, double tol) {
  const auto ref = run(DType::f64), got = run(DType::f32);
  REQUIRE(ref.size() == got.size());
  for (std::size_t i = 0; i < ref.size(); ++i) {
    INFO("output " << i << " " << ref[i].describe());
    CHECK(max_rel_err(got[i], ref[i]) < tol);
  }
}

}  // namespace moe::testing
