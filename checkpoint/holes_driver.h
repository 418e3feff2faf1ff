// An HDF5 file driver for creating a checkpoint's file alone on behalf of several writers
// (internal to checkpoint/). It writes like HDF5's default (sec2) driver, except the bytes
// HDF5 hands over from one caller-given buffer, which it leaves as holes in the file.
//
// Why: rank 0 creates every dataset and allocates each chunk at its stored size by writing it
// with H5Dwrite_chunk from that buffer (nothing reaches the disk), then every rank writes the
// chunks it holds at their addresses (chunk_writer.h). Parallel HDF5 1.10 cannot allocate a
// filtered dataset's chunks without writing each of them with fill values when the dataset
// is created: every save would write the file twice.
#pragma once
#include <hdf5.h>

#include <cstddef>

namespace moe::ckpt::detail {

// A new file access property list (the caller closes it with H5Pclose) for this driver:
// writes whose data lies in [hole, hole + bytes) are skipped. The file is extended to its
// full size when closed; the skipped ranges read as zeros until someone writes them.
hid_t holes_fapl(const void* hole, std::size_t bytes);

}  // namespace moe::ckpt::detail
