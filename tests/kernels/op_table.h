// Every op of kernels/ops.h once, as a row of a table (ggml's test-backend-ops is the model):
// its shapes, how it is compared, its FLOPs. A row builds its inputs from fixed seeds in the
// real dtype and on the device asked, runs the op (forward and backward where there is one)
// and returns every output on the host. The tests run each row on every backend at hand:
//   CPU f32 against CPU f64      (f32_tol; rows whose op takes f32 only skip it)
//   sim against CPU              (bit for bit: the sim device runs the CPU kernels)
//   CUDA against CPU, in f32     (gpu_tol; 0: bit for bit), on a GPU (tests/cuda)
// Integer outputs are compared exactly everywhere.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kernels/tensor.h"

namespace moe::testing {

struct OpCase {
  std::string name;       // the op(s) and the shapes, e.g. "rmsnorm (37,300)"
  bool real = true;       // runs in f64 too
  double f32_tol = 1e-5;  // ||f32 - f64|| / ||f64|| per output
  double gpu_tol = 1e-6;  // ||cuda - cpu|| / ||cpu|| per output; 0: the same bits
  bool on_gpu = true;     // false: its GPU comparison needs more than a tolerance (its own test)
  double flops = 0;       // per run (forward and backward), for the GPU's rate
  std::function<std::vector<Tensor>(DType real, Device device)> run;
};

const std::vector<OpCase>& op_cases();

// ||a - b|| / ||b|| over all elements in double, for f32 and f64 in any pairing; for other
// dtypes 0 where the bytes are equal, else 1 (as for differing shapes). Host tensors.
double norm_err(const Tensor& a, const Tensor& b);
// The same bytes (host tensors).
bool same_bits(const Tensor& a, const Tensor& b);

}  // namespace moe::testing
