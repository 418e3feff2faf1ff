#include "comm/pipeline.h"

#include <algorithm>

namespace moe {
namespace {
enum Tag { kActivation = 11, kGradient = 12 };
}  // namespace

std::vector<PipeUnit> schedule_1f1b(int p, int s, std::int64_t m, int v) {
  MOE_CHECK(v == 1 || m % p == 0, ConfigError,
            "pipeline: the interleaved schedule runs micro-batches in groups of the {} stages, but a step has {}; make "
            "train.grad_accum a multiple of parallel.pp",
            p, m);
  const std::int64_t total = m * v;
  // Unit k of a direction: micro-batch and chunk (backwards visit the chunks in reverse).
  auto unit = [&](std::int64_t k, bool forward) {
    const int c = static_cast<int>((k / p) % v);
    return PipeUnit{forward, v == 1 ? k : (k / (std::int64_t(p) * v)) * p + k % p, forward ? c : v - 1 - c};
  };
  std::int64_t warmup =
      std::min<std::int64_t>(std::int64_t(p - 1 - s) * (v > 1 ? 2 : 1) + std::int64_t(v - 1) * p, total);
  if (v > 1 && m == p) warmup = total;  // (Megatron: one group of micro-batches runs all forwards first)
  std::vector<PipeUnit> out;
  for (std::int64_t k = 0; k < warmup; ++k) out.push_back(unit(k, true));
  for (std::int64_t k = 0; k < total - warmup; ++k)
    out.push_back(unit(warmup + k, true)), out.push_back(unit(k, false));
  for (std::int64_t k = total - warmup; k < total; ++k) out.push_back(unit(k, false));
  return out;
}

std::vector<PipeUnit> schedule_forward(std::int64_t m, int v) {
  std::vector<PipeUnit> out;
  for (int c = 0; c < v; ++c)
    for (std::int64_t i = 0; i < m; ++i) out.push_back({true, i, c});
  return out;
}

void run_schedule(Communicator& pp, int v, const std::vector<PipeUnit>& units, const StageWork& work) {
  const int p = pp.size(), s = pp.rank(), next = (s + 1) % p, prev = (s + p - 1) % p;
  const int last = p * v - 1;  // the last virtual stage
  for (const PipeUnit& u : units) {
    const int vs = u.chunk * p + s;  // this unit's virtual stage
    Tensor x;
    if (u.forward ? vs > 0 : vs < last) {
      x = Tensor::empty(work.activation, DType::f32);
      pp.recv(x, u.forward ? prev : next, u.forward ? kActivation : kGradient);
    }
    const Tensor y = u.forward ? work.forward(u.micro_batch, u.chunk, x) : work.backward(u.micro_batch, u.chunk, x);
    if (u.forward ? vs < last : vs > 0) pp.post_send(y, u.forward ? next : prev, u.forward ? kActivation : kGradient);
  }
  pp.wait_sends();
}

}  // namespace moe
