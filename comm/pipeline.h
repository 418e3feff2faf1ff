// Pipeline schedules of one stage: 1F1B (PipeDream-Flush, as Megatron-LM runs it), its
// interleaved form with v model chunks per stage (Megatron's virtual stages), and DualPipeV
// (DeepSeek's DualPipe cut in half: two chunks per stage in a V, the weight gradients split
// from the input gradients to fill the bubble).
//
// With v chunks, stage s of p holds virtual stages s, p + s, ..., (v-1)p + s: a micro-batch
// goes through every stage's first chunk, then every stage's second, and so on. Stage s runs
// m micro-batches x v chunks as w = min((p-1-s)*2 + (v-1)*p, m*v) forward units to fill the
// pipe (with v = 1: p-1-s), then alternates one forward and one backward unit, then drains
// the last w backwards; forward units go in groups of p micro-batches per chunk (Megatron's
// order, so m must be a multiple of p when v > 1). The bubble is (p-1)/(v*m + p-1) of the
// schedule when stages take equal time, v times smaller than 1F1B's, for v times the
// point-to-point messages and more micro-batches' activations held.
//
// DualPipeV (deepseek-ai/DualPipe, dualpipev.py): stage s of p holds virtual stages s and
// 2p-1-s, so a micro-batch goes down the stages through their first chunks and back up
// through their second; stage 0 holds the embedding and the loss, stage p-1 turns the V
// without a message. Its unit order is the reference's step for step: forwards of chunk 0 to
// fill, then pairs of one micro-batch's forward with another's backward (F&B, the place where
// one's expert all-to-all would hide behind the other's compute: StageWork::pair_units), and
// backwards whose weight gradients are left for later (`inputs`) where a `weights` unit fills
// what would be idle. With a forward, an input-gradient and a weight-gradient unit of equal
// time and pairs run as one, the idle part of the schedule is the reference's (PP/2-1)(F&B +
// B - 3W) with PP = 2p stages and F&B = F + B: (p-1)/(3m + p-1) of it, against 1F1B's
// (p-1)/(m + p-1); unpaired (no overlap inside a pair to wait for) about half that. It needs
// m >= 2p, and holds at most 2p + 1 (micro-batch, chunk) units of activations where 1F1B's
// first stage holds p.
//
// Activations go to the next virtual stage and gradients back by point-to-point messages on
// the pipeline communicator: a unit waits to receive its input, and hands its output on
// without waiting (post_send), so neighbours never wait on each other's send. Messages
// between two stages arrive in the order both run their units, so no tags per micro-batch.
//
// The schedule knows nothing of the model: the callbacks run one micro-batch through one
// chunk.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/tensor.h"
#include "comm/communicator.h"

namespace moe {

// Where the virtual stages sit: interleaved (virtual stage c p + s is chunk c of stage s) or
// DualPipeV's V (virtual stages s and 2p-1-s on stage s).
struct PipeShape {
  int stages = 1, chunks = 1;
  bool v = false;  // the V (chunks = 2)
  int virtual_stage(int stage, int chunk) const {
    return v && chunk == 1 ? 2 * stages - 1 - stage : chunk * stages + stage;
  }
  int stage_of(int vs) const { return v && vs >= stages ? 2 * stages - 1 - vs : vs % stages; }
  int last() const { return stages * chunks - 1; }
};

struct StageWork {
  // Micro-batch i forward through chunk c: `in` is the previous virtual stage's output
  // (undefined on virtual stage 0); returns this chunk's output (ignored on the last).
  std::function<Tensor(std::int64_t i, int chunk, const Tensor& in)> forward;
  // Micro-batch i backward through chunk c: `dout` is the gradient of its output (undefined
  // on the last virtual stage); returns the gradient of its input (ignored on the first).
  std::function<Tensor(std::int64_t i, int chunk, const Tensor& dout)> backward;
  Shape activation;  // what flows between stages, e.g. (B*T, C) f32
  // The same backward with the weight gradients left for `weights(i, chunk)`, which a later
  // unit runs (schedules that split them: DualPipeV).
  std::function<Tensor(std::int64_t i, int chunk, const Tensor& dout)> inputs = {};
  std::function<void(std::int64_t i, int chunk)> weights = {};
  // DualPipe's F&B pairs run as one unit: both inputs received before either runs, as an
  // implementation that overlaps one's communication with the other's compute needs. Without
  // that overlap a pair's forward need not wait for its backward's input, and the schedule
  // idles less (about half, at equal units): the default.
  bool pair_units = false;
};

enum class Pass : std::uint8_t { forward, backward, inputs, weights };

struct PipeUnit {
  Pass pass;
  std::int64_t micro_batch;
  int chunk;
  bool paired = false;  // runs with the next unit: both inputs are received before either runs
  bool forward() const { return pass == Pass::forward; }
};

// The order stage s of p runs m micro-batches through its v chunks (1F1B; interleaved when
// v > 1). Throws ConfigError when v > 1 and p does not divide m.
std::vector<PipeUnit> schedule_1f1b(int p, int s, std::int64_t m, int v = 1);
// DualPipeV's order on stage s of p (two chunks in a V). Throws ConfigError when m < 2p.
// split = false: every backward whole (no `inputs` or `weights` units), for memory: a split
// backward holds its GEMMs' inputs and output gradients until its weights run, and at the
// drain up to about p of them wait on a stage.
std::vector<PipeUnit> schedule_dualpipev(int p, int s, std::int64_t m, bool split = true);
// Forward only (evaluation): every micro-batch through chunk 0, then chunk 1, ...
std::vector<PipeUnit> schedule_forward(std::int64_t m, int v = 1);

// Runs `units` on this stage. pp: the pipeline communicator (rank = stage); fresh receive
// buffers per message, so callbacks may keep what they are given.
void run_schedule(Communicator& pp, const PipeShape& shape, const std::vector<PipeUnit>& units, const StageWork& work);

inline void run_1f1b(Communicator& pp, std::int64_t m, const StageWork& work, int v = 1) {
  run_schedule(pp, {pp.size(), v}, schedule_1f1b(pp.size(), pp.rank(), m, v), work);
}
inline void run_dualpipev(Communicator& pp, std::int64_t m, const StageWork& work, bool split = true) {
  run_schedule(pp, {pp.size(), 2, true}, schedule_dualpipev(pp.size(), pp.rank(), m, split), work);
}
inline void run_forward(Communicator& pp, std::int64_t m, const StageWork& work, const PipeShape& shape) {
  run_schedule(pp, shape, schedule_forward(m, shape.chunks), work);
}

// The ideal bubble with equal stages.
inline double bubble_fraction(std::int64_t p, std::int64_t m, std::int64_t v = 1) {
  return double(p - 1) / double(v * m + p - 1);
}
// DualPipeV's with forward, input-gradient and weight-gradient units of equal time: pairs run
// as one, the repository's formula (above); unpaired, from schedule_span.
double dualpipev_bubble_fraction(int p, std::int64_t m, bool pairs, bool split = true);
// DualPipeV's idle time on a stage (schedule_span less a stage's 2m units of work) with
// units of f (forward), bi (inputs) and w (weights), a whole backward bi + w.
double dualpipev_idle(int p, std::int64_t m, double f, double bi, double w, bool pairs, bool split);

// The time the schedules of all p stages take when messages are free and a unit takes f
// (forward), b (backward), bi (inputs) or w (weights): each unit starts when its stage is
// free and its input has been computed; with `pairs`, a pair when both inputs have. The
// planner prices DualPipeV's bubble with it at its own F, B and W; tests check it against
// the formulas.
double schedule_span(const PipeShape& shape, const std::vector<std::vector<PipeUnit>>& stages, double f, double b,
                     double bi, double w, bool pairs);

}  // namespace moe
