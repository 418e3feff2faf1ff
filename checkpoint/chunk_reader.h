// Reading a checkpoint's chunks with pread and verifying them, on a thread of its own while
// the caller asks HDF5 where the next chunks are (internal to checkpoint/). Each chunk is
// read a few hundred KiB at a time, straight into the slice's memory where a piece lies in
// one part the slice holds (else into a scratch piece, whose parts are copied out), and each piece is added to the
// Fletcher32 sum while it is still in cache; the sum is then checked against the chunk's 4 stored bytes.
#pragma once
#include <hdf5.h>

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace moe::ckpt::detail {

// Part of a chunk the slice holds: `bytes` from byte `begin` of the tensor (row-major) go to `out`.
struct ChunkPart {
  std::size_t begin = 0, bytes = 0;
  unsigned char* out = nullptr;
};

// One stored chunk: `payload` bytes at `addr` followed by its checksum; its first byte is
// byte `base` of the tensor. `parts` (in increasing order, inside the chunk) are copied out;
// the rest is read only to be checked.
struct ChunkRead {
  std::string dataset;
  hsize_t row = 0;  // the chunk's first row, for messages
  haddr_t addr = 0;
  std::size_t payload = 0, base = 0;
  std::vector<ChunkPart> parts;
};

class ChunkReader {
 public:
  explicit ChunkReader(const std::string& path);  // opens the file; CheckpointError if it cannot
  ~ChunkReader();                                 // stops the thread (after an error: unread chunks dropped)
  ChunkReader(const ChunkReader&) = delete;
  ChunkReader& operator=(const ChunkReader&) = delete;
  void add(ChunkRead chunk);
  // Waits for every chunk added; throws the first failure (CheckpointError naming the file,
  // dataset and chunk).
  void finish();

 private:
  void run();
  void read(const ChunkRead& c);
  std::string path_;
  int fd_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<ChunkRead> queue_;
  bool closing_ = false;
  std::string error_;
  std::thread thread_;
};

}  // namespace moe::ckpt::detail
