// Several ranks writing one checkpoint's chunks without HDF5's collective filtered write
// (internal to checkpoint/). The file exists with every chunk allocated at its stored size
// (the payload plus Fletcher32's 4 bytes): created by rank 0 alone with holes
// (holes_driver.h), or by parallel HDF5. Each chunk is then written whole, once, by the rank
// holding its first element: the pieces of it other ranks hold come to it over MPI (one
// all-to-all of bytes; at most the chunks that straddle a range boundary), and it appends
// the checksum and writes the bytes at the chunk's address with pwrite. HDF5 stores the same
// bytes through its filter; the reader verifies them.
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "checkpoint/slices.h"

namespace moe::ckpt::detail {

// Leading rows per chunk: whole trailing dimensions, about 8 MiB.
std::int64_t chunk_rows(const Shape& shape);
// Chunks along the leading dimension (the only one cut), and a chunk's size in the file:
// every chunk at full size (an edge chunk too), followed by its 4 checksum bytes.
std::int64_t chunk_count(const Shape& shape);
std::size_t chunk_stored_bytes(const Shape& shape);

// Who holds what: every rank's flat range of every dataset, from one all-gather.
class WholeChunks {
 public:
  // Collective over comm (the same datasets in the same order on every rank).
  WholeChunks(MPI_Comm comm, const std::vector<Dataset>& datasets, const std::vector<Slice>& mine);
  // Whether ranks write datasets[i] chunk by chunk: their slices are flat ranges that tile it
  // exactly (no tensor-parallel window, no gap, no overlap). The rest is HDF5's to write.
  bool raw(std::size_t i) const { return raw_[i]; }
  bool all_raw() const;
  std::pair<std::int64_t, std::int64_t> range(int rank, std::size_t i) const;
  // The rank whose range holds element e of dataset i: the writer of the chunk e starts.
  int owner(std::size_t i, std::int64_t e) const;

 private:
  std::vector<std::int64_t> all_;  // (begin, end, holds a window) per (rank, dataset)
  std::size_t D_;
  int p_;
  std::vector<bool> raw_;
};

// Chunk c of dataset i is stored at addresses[i][c]; empty for datasets not written raw.
using ChunkAddresses = std::vector<std::vector<haddr_t>>;

// Asked of HDF5 for every raw dataset of `file` (its datasets created, chunks allocated):
// throws CheckpointError where a chunk is not allocated at the payload plus 4 bytes.
ChunkAddresses chunk_addresses(const std::string& path, hid_t file, const std::vector<Dataset>& datasets,
                               const WholeChunks& plan);

// Collective over comm: writes every raw dataset's chunks whole at `addresses` (the file at
// `path` exists at its full size), then fdatasyncs. A failure on one rank fails it on all.
void write_whole_chunks(const std::string& path, MPI_Comm comm, const std::vector<Dataset>& datasets,
                        const std::vector<Slice>& mine, const WholeChunks& plan, const ChunkAddresses& addresses);

}  // namespace moe::ckpt::detail
