// HDF5 checkpoints (docs/CHECKPOINT.md): one file per saved step. Every tensor is one f32
// dataset at its full logical shape under its Hugging Face name ("weights/<name>",
// "optimizer/exp_avg/<name>", "optimizer/exp_avg_sq/<name>", "buffers/<name>"), chunked with
// the Fletcher32 checksum filter; the run's state is attributes of the root group.
// Writing is collective over a communicator, reading is each rank's own: each rank moves
// only its slices (checkpoint/slices.h), nobody gathers the model (docs/CHECKPOINT.md).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "checkpoint/slices.h"
#include "comm/communicator.h"

namespace moe::ckpt {

inline constexpr std::int64_t kFormatVersion = 1;

// One attribute of a checkpoint's root group.
using Attribute = std::variant<std::int64_t, std::uint64_t, double, std::string>;

// The run's state besides the tensors: the root group's attributes by name, written by one
// loop and read by another whatever they are. write() adds "format_version" itself; the other
// names are the writer's (the trainer's: trainer/run_meta.h).
struct Meta {
  std::map<std::string, Attribute> attrs;
  std::string file;  // where read_meta read it, for errors (empty for one being written)
  bool has(const std::string& name) const { return attrs.count(name) > 0; }
  // `name`'s value: CheckpointError naming the file and the attribute when it is missing or
  // of another type.
  template <class T>
  const T& get(const std::string& name) const {
    const auto it = attrs.find(name);
    const T* v = it == attrs.end() ? nullptr : std::get_if<T>(&it->second);
    if (!v) missing(name);
    return *v;
  }

 private:
  [[noreturn]] void missing(const std::string& name) const;
};

// Collective over comm: creates `path` (truncating), every dataset in `datasets` (same list
// in the same order on every rank), writes this rank's slices and the attributes of `meta`
// (identical on every rank). The ranks' slices must cover every dataset exactly once.
// Throws CheckpointError naming the file and dataset, on every rank.
void write(const std::string& path, Communicator& comm, const Meta& meta, const std::vector<Dataset>& datasets,
           const std::vector<Slice>& mine);
// write() for more data than fits in memory at once: the file and every dataset are created
// as write() does, then filled in rounds (rounds[r]: indices into datasets; the same list on
// every rank). Round r asks fill(r) for this rank's slices of its datasets, whose memory must
// stay valid until the next call; the ranks' slices of a round cover its datasets exactly
// once. Each round's chunks reach the disk (fdatasync) before the next.
void write_in_rounds(const std::string& path, Communicator& comm, const Meta& meta,
                     const std::vector<Dataset>& datasets, const std::vector<std::vector<std::size_t>>& rounds,
                     const std::function<std::vector<Slice>(std::size_t round)>& fill);

// write() in two halves, so that the ranks go on (training) while the chunks reach the disk.
// start_write (collective) copies this rank's slices (their tensors may change as soon as it
// returns), creates the file, sends the pieces of every chunk to the rank that writes it, and
// leaves this rank's chunk writes (pwrite, fdatasync: no collective) to a thread of its own.
// finish (collective) waits for them and agrees: CheckpointError on every rank where any
// rank failed. The file is complete only after finish; a process that dies before leaves it
// incomplete (a temp file the store never commits). Holds a host copy of this rank's slices.
class PendingWrite {
 public:
  PendingWrite();
  PendingWrite(PendingWrite&&) noexcept;
  PendingWrite& operator=(PendingWrite&&) noexcept;
  ~PendingWrite();  // waits for the thread; the file stays incomplete
  bool active() const { return s_ != nullptr; }
  bool written() const;  // this rank's chunks are on disk (or failed): finish would not wait
  void finish(Communicator& comm);
  struct State;

 private:
  explicit PendingWrite(std::unique_ptr<State> s);
  friend PendingWrite start_write(const std::string&, Communicator&, const Meta&, const std::vector<Dataset>&,
                                  const std::vector<Slice>&, std::vector<Tensor>, int);
  std::unique_ptr<State> s_;
};
// snapshots: host tensors some slices point into that are copies already (a GPU's staged
// state): kept alive by the write instead of copied again. hold_ms: the thread waits that long
// before writing (a drill: the steps provably go on).
PendingWrite start_write(const std::string& path, Communicator& comm, const Meta& meta,
                         const std::vector<Dataset>& datasets, const std::vector<Slice>& mine,
                         std::vector<Tensor> snapshots = {}, int hold_ms = 0);

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

// One process: every attribute of the root group (CheckpointError naming the file for a
// format version other than this build's, or an attribute of a type Attribute cannot hold).
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

// One process: the names of every dataset in the file (no data read).
std::vector<std::string> dataset_names(const std::string& path);

// One process: every dataset under `group` (e.g. "weights", "buffers") at its full shape,
// keyed by its name inside the group, each verified by its checksums (CheckpointError
// naming the file and dataset otherwise). For export, not for training-sized models.
std::map<std::string, Tensor> read_group(const std::string& path, const std::string& group);

}  // namespace moe::ckpt
