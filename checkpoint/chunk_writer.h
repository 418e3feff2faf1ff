// Several ranks writing one checkpoint without HDF5's collective filtered write (internal to
// checkpoint/). Parallel HDF5 allocates every chunk of a dataset when it is created, at the
// size its filter gives a chunk (the payload plus Fletcher32's 4 bytes). Each chunk is then
// written whole, once, by the rank holding its first element: the pieces of it other ranks
// hold come to it over MPI (one all-to-all of bytes; at most the chunks that straddle a
// range boundary), and it appends the checksum and writes the bytes at the chunk's address
// with pwrite. HDF5 stores the same bytes through its filter; the reader verifies them.
#pragma once
#include <hdf5.h>
#include <mpi.h>

#include <string>
#include <vector>

#include "checkpoint/slices.h"

namespace moe::ckpt::detail {

// Leading rows per chunk: whole trailing dimensions, about 8 MiB.
std::int64_t chunk_rows(const Shape& shape);

// Collective over comm. Writes every dataset whose slices are flat ranges covering it once
// (no tensor-parallel window on any rank) and returns, per dataset, whether it did; the rest
// are left to HDF5's collective write. file: `path` opened through MPI-IO, datasets created.
std::vector<bool> write_whole_chunks(const std::string& path, MPI_Comm comm, hid_t file,
                                     const std::vector<Dataset>& datasets, const std::vector<Slice>& mine);

}  // namespace moe::ckpt::detail
