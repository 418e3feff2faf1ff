// Test helpers shared by the op tests: random tensors, dtype casts, error measures and
// central finite differences in double (the gradient oracle).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/tensor.h"

namespace moe::testing {

// Uniform in [-scale, scale], reproducible from the seed; f32 or f64.
Tensor random(const Shape& shape, std::uint64_t seed, double scale = 1.0, DType dtype = DType::f64);
// An i32 tensor of values in [lo, hi].
Tensor random_ints(const Shape& shape, std::uint64_t seed, int lo, int hi);
// An i32 host tensor holding v, of shape `shape` (empty: 1-D).
Tensor ints(const std::vector<std::int32_t>& v, Shape shape = {});
// An i32 host tensor's values, in order.
std::vector<std::int32_t> values(const Tensor& t);
// A copy converted between f32 and f64.
Tensor cast(const Tensor& t, DType dtype);
// Element i as double, whatever the real dtype.
double at(const Tensor& t, std::int64_t i);
// sum(a * b) in double.
double dot(const Tensor& a, const Tensor& b);
// max |a - b| / max(max |b|, floor): relative to the tensor's scale, not each element's.
double max_rel_err(const Tensor& a, const Tensor& b, double floor = 1e-12);

// d loss / d x by central differences: x is perturbed in place by +-h per element (and
// restored); loss() must recompute the forward from x. x must be f64.
Tensor numeric_grad(Tensor& x, const std::function<double()>& loss, double h = 1e-6);

// Runs `run` in f64 and in f32 and checks every output agrees within tol (relative).
void check_f32_matches_f64(const std::function<std::vector<Tensor>(DType)>& run, double tol);

}  // namespace moe::testing
