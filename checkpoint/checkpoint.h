// HDF5 checkpoints (docs/CHECKPOINT.md): one file per saved step. Every tensor is one f32
// dataset at its full logical shape under its Hugging Face name ("weights/<name>",
// "optimizer/exp_avg/<name>", "optimizer/exp_avg_sq/<name>", "buffers/<name>"), chunked with
// the Fletcher32 checksum filter; the run's state is attributes of the root group.
// Writing is collective over a communicator, reading is each rank's own: each rank moves
// only its slices (checkpoint/slices.h), nobody gathers the model (docs/CHECKPOINT.md).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/slices.h"
#include "comm/communicator.h"

namespace moe::ckpt {

inline constexpr std::int64_t kFormatVersion = 1;

// The run's state besides the tensors.
struct Meta {
  std::int64_t format_version = kFormatVersion;
  std::int64_t step = 0;    // optimizer steps done; the data position and schedule follow from it
  std::uint64_t seed = 0;   // batches are a function of (seed, step); init draws from it too
  std::string config_yaml;  // the resolved config that wrote it
  std::string layout;       // e.g. "world 4: pp 1 x dp 4 x tp 1, ep 2, zero 1"
  double tokens = 0;        // training tokens so far
  double global_batch = 0;  // sequences per optimizer step (dp x grad_accum x micro_batch)
  double wall_seconds = 0;  // training wall time so far
  double device_hours = 0;  // ranks x wall time so far
  double last_loss = 0;     // training loss of the last step
  double val_loss = 0;      // validation loss with the saved weights (0: not evaluated)
  // The cost counters (trainer/cost.h), summed over launches: device-hours by category,
  // model FLOPs done, training wall seconds.
  double dh_compute = 0, dh_communication = 0, dh_evaluation = 0, dh_checkpoint = 0, dh_pipeline_idle = 0, flops = 0,
         train_seconds = 0;
};

// Collective over comm: creates `path` (truncating), every dataset in `datasets` (same list
// in the same order on every rank), writes this rank's slices and the attributes of `meta`
// (identical on every rank). The ranks' slices must cover every dataset exactly once.
// Throws CheckpointError naming the file and dataset, on every rank.
void write(const std::string& path, Communicator& comm, const Meta& meta, const std::vector<Dataset>& datasets,
           const std::vector<Slice>& mine);

// Each rank on its own: checks that the file has every dataset of `expected` at its shape
// and dtype (CheckpointError listing the mismatches), then reads this rank's slices: the raw
// chunks they touch, each verified against its Fletcher32 checksum (checkpoint/fletcher32.h).
void read(const std::string& path, const std::vector<Dataset>& expected, const std::vector<Slice>& mine);

// The byte ranges of the file read() fetches for `mine`: (address, bytes) of every chunk its
// slices touch, checksum included (what a plain POSIX read of the same bytes reads: the
// benchmark's peer).
std::vector<std::pair<std::uint64_t, std::uint64_t>> read_extents(const std::string& path,
                                                                  const std::vector<Dataset>& expected,
                                                                  const std::vector<Slice>& mine);

// One process, no MPI-IO: the attributes.
Meta read_meta(const std::string& path);

// One process: every dataset's name, shape, dtype and whether all its chunks pass their
// checksum (each dataset is read in full).
struct DatasetInfo {
  std::string name;
  Shape shape;
  std::string dtype;
  bool checksum_ok = false;
  std::string error;  // why not, when not
};
std::vector<DatasetInfo> inspect(const std::string& path);

// One process: every dataset under `group` (e.g. "weights", "buffers") at its full shape,
// keyed by its name inside the group, each verified by its checksums (CheckpointError
// naming the file and dataset otherwise). For export, not for training-sized models.
std::map<std::string, Tensor> read_group(const std::string& path, const std::string& group);

}  // namespace moe::ckpt
