#include "parallel/pipeline.h"

#include <algorithm>

namespace moe {
namespace {
enum Tag { kActivation = 11, kGradient = 12 };
}  // namespace

void run_1f1b(Communicator& pp, std::int64_t m, const StageWork& work) {
  const int p = pp.size(), s = pp.rank();
  const bool first = s == 0, last = s == p - 1;
  const std::int64_t warmup = std::min<std::int64_t>(p - 1 - s, m), steady = m - warmup;
  auto fresh = [&] { return Tensor::empty(work.activation, DType::f32); };
  Tensor x;  // the next forward's input
  auto recv_forward = [&] {
    if (first) return;
    x = fresh();
    pp.recv(x, s - 1, kActivation);
  };
  for (std::int64_t i = 0; i < warmup; ++i) {
    recv_forward();
    const Tensor y = work.forward(i, x);
    if (!last) pp.send(y, s + 1, kActivation);
  }
  if (steady > 0) recv_forward();
  for (std::int64_t i = 0; i < steady; ++i) {
    const Tensor y = work.forward(warmup + i, x);
    Tensor dy;
    if (!last) {
      dy = fresh();
      pp.send_recv(y, s + 1, kActivation, dy, s + 1, kGradient);
    }
    const Tensor dx = work.backward(i, dy);
    if (first) continue;
    if (i == steady - 1) {
      pp.send(dx, s - 1, kGradient);
    } else {
      x = fresh();
      pp.send_recv(dx, s - 1, kGradient, x, s - 1, kActivation);
    }
  }
  for (std::int64_t i = steady; i < m; ++i) {
    Tensor dy;
    if (!last) {
      dy = fresh();
      pp.recv(dy, s + 1, kGradient);
    }
    const Tensor dx = work.backward(i, dy);
    if (!first) pp.send(dx, s - 1, kGradient);
  }
}

void run_forward(Communicator& pp, std::int64_t m, const StageWork& work) {
  const int p = pp.size(), s = pp.rank();
  for (std::int64_t i = 0; i < m; ++i) {
    Tensor x;
    if (s > 0) {
      x = Tensor::empty(work.activation, DType::f32);
      pp.recv(x, s - 1, kActivation);
    }
    const Tensor y = work.forward(i, x);
    if (s < p - 1) pp.send(y, s + 1, kActivation);
  }
}

}  // namespace moe
