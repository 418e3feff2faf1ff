// The ranks writing one checkpoint's chunks (internal to checkpoint/). The file exists with
// every chunk allocated at its stored size (the payload plus Fletcher32's 4 bytes), created
// by rank 0 alone with holes (holes_driver.h). Each chunk is then written whole, once, by
// one rank (WholeChunks::owner): the pieces of it other ranks hold come to it through the
// Communicator (one all-to-all of bytes: the chunks that straddle a range boundary, and tensor-parallel
// windows), and it appends the checksum and writes the bytes at the chunk's address with
// pwrite. HDF5 stores the same bytes through its filter; the reader verifies them.
#pragma once
#include <hdf5.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/slices.h"
#include "comm/communicator.h"

namespace moe::ckpt::detail {

// Leading rows per chunk: whole trailing dimensions, at most 8 MiB (unless one row is more),
// spread evenly over as few chunks as that takes.
std::int64_t chunk_rows(const Shape& shape);
// Chunks along the leading dimension (the only one cut), and a chunk's size in the file:
// every chunk at full size (an edge chunk too), followed by its 4 checksum bytes.
std::int64_t chunk_count(const Shape& shape);
std::size_t chunk_stored_bytes(const Shape& shape);

// Who writes which chunk, from every rank's range of every dataset (one all-gather).
class WholeChunks {
 public:
  // Collective over comm (the same datasets in the same order on every rank).
  WholeChunks(Communicator& comm, const std::vector<Dataset>& datasets, const std::vector<Slice>& mine);
  // The rank that writes chunk c of dataset i: for a dataset held as flat ranges, the one
  // whose range holds the chunk's first element (most chunks then need nothing from other
  // ranks); for one held as tensor-parallel windows, the ranks in turn.
  int owner(std::size_t i, std::int64_t c) const;

 private:
  std::vector<std::int64_t> all_;  // (begin, end, holds a window) per (rank, dataset)
  std::size_t D_;
  int p_;
  std::vector<bool> windowed_;
  std::vector<std::int64_t> per_;  // elements per chunk
};

// Collective over comm: `error` as rank `root` has it, thrown as a CheckpointError on every
// rank when not empty.
void share_error(const std::string& error, int root, Communicator& comm);

// Chunk c of dataset i is stored at addresses[i][c].
using ChunkAddresses = std::vector<std::vector<haddr_t>>;

// Asked of HDF5 for every dataset of `file` (created, chunks allocated): throws
// CheckpointError where a chunk is not allocated at the payload plus 4 bytes.
ChunkAddresses chunk_addresses(const std::string& path, hid_t file, const std::vector<Dataset>& datasets);

// Collective over comm: writes every chunk whole at `addresses` (the file at `path` exists at
// its full size), then fdatasyncs. The ranks' slices must cover every dataset exactly once
// (CheckpointError otherwise). A failure on one rank fails it on all. In three parts below,
// so that the writes (the middle one) can run while the ranks go on.
void write_whole_chunks(const std::string& path, Communicator& comm, const std::vector<Dataset>& datasets,
                        const std::vector<Slice>& mine, const WholeChunks& plan, const ChunkAddresses& addresses);

// A piece of a chunk: `count` elements from dataset element `begin`, held at `data`.
struct Piece {
  std::int64_t begin, count;
  const float* data;
};
using Pieces = std::map<std::pair<std::size_t, std::int64_t>, std::vector<Piece>>;  // (dataset, chunk) -> pieces

// The chunks this rank writes, every piece of them in hand: its own pointing into its slices'
// memory (which must outlive the writes), the other ranks' into `received`; and the first
// error this rank met ("": none).
struct OwnedChunks {
  Pieces pieces;
  Tensor received;
  std::string error;
};
// Collective over comm: the pieces of each chunk sent to the rank that writes it.
OwnedChunks gather_chunks(const std::string& path, Communicator& comm, const std::vector<Dataset>& datasets,
                          const std::vector<Slice>& mine, const WholeChunks& plan);
// This rank alone (no collective): its chunks written and fdatasynced; a failure into owned.error.
void write_chunks(const std::string& path, const std::vector<Dataset>& datasets, const WholeChunks& plan, int me,
                  OwnedChunks& owned, const ChunkAddresses& addresses);
// Collective over comm: every rank throws (CheckpointError) the first failing rank's error.
void agree(const std::string& error, Communicator& comm);

}  // namespace moe::ckpt::detail
