#include "comm/pipeline.h"

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>

namespace moe {
std::vector<PipeUnit> schedule_1f1b(int p, int s, std::int64_t m, int v) {
  MOE_CHECK(v == 1 || m % p == 0, ConfigError,
            "pipeline: the interleaved schedule runs micro-batches in groups of the {} stages, but a step has {}; make "
            "train.grad_accum a multiple of parallel.pp",
            p, m);
  const std::int64_t total = m * v;
  // Unit k of a direction: micro-batch and chunk (backwards visit the chunks in reverse).
  auto unit = [&](std::int64_t k, bool forward) {
    const int c = static_cast<int>((k / p) % v);
    return PipeUnit{forward ? Pass::forward : Pass::backward, v == 1 ? k : (k / (std::int64_t(p) * v)) * p + k % p,
                    forward ? c : v - 1 - c};
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

std::vector<PipeUnit> schedule_dualpipev(int p, int s, std::int64_t m, bool split_weights) {
  MOE_CHECK(m >= 2 * std::int64_t(p), ConfigError,
            "pipeline: DualPipeV needs at least 2 x the {} stages' micro-batches, but a step has {}; raise "
            "train.grad_accum",
            p, m);
  std::vector<PipeUnit> out;
  std::int64_t forwards[2] = {0, 0}, backwards[2] = {0, 0};
  std::deque<std::pair<std::int64_t, int>> deferred;  // backwards whose weights wait, oldest first
  const auto F = [&](int c) { return PipeUnit{Pass::forward, forwards[c]++, c}; };
  const auto B = [&](int c, bool split = false) {
    split = split && split_weights;
    if (split) deferred.push_back({backwards[c], c});
    return PipeUnit{split ? Pass::inputs : Pass::backward, backwards[c]++, c};
  };
  const auto W = [&] {
    if (deferred.empty()) return;  // (split_weights off)
    const auto [i, c] = deferred.front();
    deferred.pop_front();
    out.push_back({Pass::weights, i, c});
  };
  const auto one = [&](PipeUnit u) { out.push_back(u); };
  const auto pair = [&](PipeUnit a, PipeUnit b) { a.paired = true, out.push_back(a), out.push_back(b); };
  const int later = p - s - 1;                        // stages after this one
  for (int k = 0; k < 2 * later; ++k) one(F(0));      // 1: fill with chunk 0
  for (int k = 0; k <= s; ++k) one(F(0)), one(F(1));  // 2: and chunk 1
  for (int k = 0; k < later; ++k) {                   // 3: backwards begin, their weights fill
    one(B(1, true));
    W();
    one(F(1));
  }
  for (std::int64_t k = 0; k < m - 2 * p + s + 1; ++k) {  // 4: the steady state, in pairs
    if (k == 0 && s == p - 1) one(F(0)), one(B(1));       // (the reference leaves this one unpaired)
    else pair(F(0), B(1));
    pair(F(1), B(0));
  }
  for (int k = 0; k < later; ++k) one(B(1)), pair(F(1), B(0));  // 5
  bool split = false;                                           // 6: the second half's weights left for the drain
  for (int k = 0; k <= s; ++k) {
    if (k == (s + 1) / 2 && s % 2 == 1) split = true;
    one(B(1, split));
    if (k == (s + 1) / 2 && s % 2 == 0) split = true;
    one(B(0, split));
  }
  for (int k = 0; k < later; ++k) W(), one(B(0, true));  // 7
  while (!deferred.empty()) W();                         // 8
  return out;
}

std::vector<PipeUnit> schedule_forward(std::int64_t m, int v) {
  std::vector<PipeUnit> out;
  for (int c = 0; c < v; ++c)
    for (std::int64_t i = 0; i < m; ++i) out.push_back({Pass::forward, i, c});
  return out;
}

namespace {
// The units that start at k together: two where a pair runs as one, else one.
std::size_t group_at(const std::vector<PipeUnit>& units, std::size_t k, bool pairs) {
  return pairs && units[k].paired && k + 1 < units.size() ? 2 : 1;
}

// One stage running its units: inputs from the neighbouring virtual stages, by message or,
// where the V turns on this stage, handed over in place.
class StageRun {
 public:
  StageRun(Communicator& pp, const PipeShape& shape, const StageWork& work)
      : pp_(pp), shape_(shape), work_(work), s_(pp.rank()) {}

  Tensor receive(const PipeUnit& u) {
    if (u.pass == Pass::weights) return {};
    const int from = neighbour(u, false);
    if (from < 0) return {};
    const int peer = shape_.stage_of(from), kind = u.forward() ? 0 : 1;
    if (peer == s_) {
      MOE_CHECK(!local_[kind].empty(), InternalError, "pipeline: stage {} has no input for its {} of micro-batch {}",
                s_, u.forward() ? "forward" : "backward", u.micro_batch);
      Tensor x = std::move(local_[kind].front());
      local_[kind].pop_front();
      return x;
    }
    Tensor x = Tensor::empty(work_.activation, DType::f32);
    pp_.recv(x, peer, kTag[kind]);
    return x;
  }

  void run(const PipeUnit& u, const Tensor& in) {
    const std::int64_t i = u.micro_batch;
    switch (u.pass) {
      case Pass::forward: return send(u, work_.forward(i, u.chunk, in));
      case Pass::backward: return send(u, work_.backward(i, u.chunk, in));
      case Pass::inputs: return send(u, work_.inputs(i, u.chunk, in));
      case Pass::weights: return work_.weights(i, u.chunk);
    }
  }

 private:
  static constexpr int kTag[2] = {11, 12};  // activations, gradients
  // The virtual stage a unit's input comes from (output goes to), -1 past either end.
  int neighbour(const PipeUnit& u, bool output) const {
    const int vs = shape_.virtual_stage(s_, u.chunk), to = (u.forward() == output) ? vs + 1 : vs - 1;
    return to < 0 || to > shape_.last() ? -1 : to;
  }
  void send(const PipeUnit& u, const Tensor& y) {
    const int to = neighbour(u, true);
    if (to < 0) return;
    const int peer = shape_.stage_of(to), kind = u.forward() ? 0 : 1;
    if (peer == s_) local_[kind].push_back(y);
    else pp_.post_send(y, peer, kTag[kind]);
  }

  Communicator& pp_;
  const PipeShape& shape_;
  const StageWork& work_;
  const int s_;
  std::deque<Tensor> local_[2];
};
}  // namespace

void run_schedule(Communicator& pp, const PipeShape& shape, const std::vector<PipeUnit>& units, const StageWork& work) {
  StageRun stage(pp, shape, work);
  for (std::size_t k = 0; k < units.size();) {
    const std::size_t n = group_at(units, k, work.pair_units);
    Tensor in[2];
    for (std::size_t j = 0; j < n; ++j) in[j] = stage.receive(units[k + j]);
    for (std::size_t j = 0; j < n; ++j) stage.run(units[k + j], in[j]);
    k += n;
  }
  pp.wait_sends();
}

double schedule_span(const PipeShape& shape, const std::vector<std::vector<PipeUnit>>& stages, double f, double b,
                     double bi, double w, bool pairs) {
  // When each (pass, virtual stage, micro-batch)'s output is ready; backward and inputs both
  // count as "the input gradient is out".
  std::map<std::tuple<bool, int, std::int64_t>, double> done;
  const int p = int(stages.size());
  std::vector<double> free_at(std::size_t(p), 0.0);
  std::vector<std::size_t> next(std::size_t(p), 0);
  const auto ready = [&](int s, const PipeUnit& u, double& at) {
    if (u.pass == Pass::weights) return true;
    const int vs = shape.virtual_stage(s, u.chunk), from = u.forward() ? vs - 1 : vs + 1;
    if (from < 0 || from > shape.last()) return true;
    const auto it = done.find({u.forward(), from, u.micro_batch});
    if (it == done.end()) return false;
    at = std::max(at, it->second);
    return true;
  };
  for (bool moved = true; moved;) {
    moved = false;
    for (int s = 0; s < p; ++s) {
      const auto& units = stages[std::size_t(s)];
      while (next[std::size_t(s)] < units.size()) {
        const std::size_t k = next[std::size_t(s)], n = group_at(units, k, pairs);
        double at = free_at[std::size_t(s)];
        bool inputs = true;
        for (std::size_t j = 0; j < n; ++j) inputs = inputs && ready(s, units[k + j], at);
        if (!inputs) break;
        for (std::size_t j = 0; j < n; ++j) {
          const PipeUnit& u = units[k + j];
          at += u.pass == Pass::forward ? f : u.pass == Pass::backward ? b : u.pass == Pass::inputs ? bi : w;
          if (u.pass != Pass::weights) done[{u.forward(), shape.virtual_stage(s, u.chunk), u.micro_batch}] = at;
        }
        free_at[std::size_t(s)] = at, next[std::size_t(s)] += n, moved = true;
      }
    }
  }
  for (int s = 0; s < p; ++s)
    MOE_CHECK(next[std::size_t(s)] == stages[std::size_t(s)].size(), InternalError,
              "pipeline: the schedule of stage {} waits forever at unit {}", s, next[std::size_t(s)]);
  return *std::max_element(free_at.begin(), free_at.end());
}

double dualpipev_idle(int p, std::int64_t m, double f, double bi, double w, bool pairs, bool split) {
  std::vector<std::vector<PipeUnit>> stages;
  for (int s = 0; s < p; ++s) stages.push_back(schedule_dualpipev(p, s, m, split));
  return schedule_span({p, 2, true}, stages, f, bi + w, bi, w, pairs) - double(2 * m) * (f + bi + w);
}

double dualpipev_bubble_fraction(int p, std::int64_t m, bool pairs, bool split) {
  if (pairs && split) return double(p - 1) / double(3 * m + p - 1);
  const double idle = dualpipev_idle(p, m, 1, 1, 1, pairs, split);
  return idle / (idle + double(6 * m));
}

}  // namespace moe
