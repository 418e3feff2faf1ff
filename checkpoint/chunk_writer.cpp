#include "checkpoint/chunk_writer.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <map>

#include "checkpoint/fletcher32.h"
#include "kernels/error.h"

namespace moe::ckpt::detail {
namespace {

std::int64_t numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto e : s) n *= e;
  return n;
}

// A piece of a chunk travelling to its writer: where it goes, then its floats.
struct Header {
  std::int64_t dataset, begin, count;  // dataset index, first element, elements
};

class File {  // the checkpoint's bytes, written by this rank at HDF5's chunk addresses
 public:
  explicit File(const std::string& path) : path_(path), fd_(::open(path.c_str(), O_WRONLY)) {
    if (fd_ < 0) fail("open");
  }
  ~File() {
    if (fd_ >= 0) ::close(fd_);
  }
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  void write(const std::string& dataset, haddr_t addr, const iovec* parts, int n, std::size_t bytes) {
    for (std::size_t done = 0; done < bytes;) {  // pwritev may write less than asked
      std::vector<iovec> rest;
      std::size_t skip = done;
      for (int i = 0; i < n; ++i) {
        if (skip >= parts[i].iov_len) {
          skip -= parts[i].iov_len;
          continue;
        }
        rest.push_back({static_cast<char*>(parts[i].iov_base) + skip, parts[i].iov_len - skip});
        skip = 0;
      }
      const ssize_t w = ::pwritev(fd_, rest.data(), static_cast<int>(rest.size()), static_cast<off_t>(addr + done));
      if (w == 0) errno = EIO;  // nothing written and no reason given
      if (w <= 0) fail("write " + dataset);
      done += static_cast<std::size_t>(w);
    }
  }
  void sync() {
    if (::fdatasync(fd_) != 0) fail("sync");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw CheckpointError(fmt::format("{}: {}: {}", path_, what, std::strerror(errno)));
  }
  std::string path_;
  int fd_;
};

using Pieces = std::multimap<std::pair<std::int64_t, std::int64_t>, const char*>;  // (dataset, chunk) -> header

void write_owned(const std::string& path, const std::vector<Dataset>& datasets, const WholeChunks& plan, int me,
                 const std::map<std::string, const Slice*>& slice_of, const Pieces& pieces, const ChunkAddresses& addresses);

}  // namespace

std::int64_t chunk_rows(const Shape& s) {
  if (s.empty()) return 1;
  const std::int64_t inner = std::max<std::int64_t>(numel(s) / std::max<std::int64_t>(s[0], 1), 1);
  return std::clamp<std::int64_t>((std::int64_t{1} << 21) / inner, 1, std::max<std::int64_t>(s[0], 1));
}

std::int64_t chunk_count(const Shape& s) {
  if (s.empty()) return 1;
  const std::int64_t rows = chunk_rows(s);
  return (s[0] + rows - 1) / rows;
}

std::size_t chunk_stored_bytes(const Shape& s) {
  const std::int64_t inner = s.empty() ? 1 : numel(s) / std::max<std::int64_t>(s[0], 1);
  return std::size_t(chunk_rows(s) * inner) * sizeof(float) + 4;
}

WholeChunks::WholeChunks(MPI_Comm comm, const std::vector<Dataset>& datasets, const std::vector<Slice>& mine)
    : D_(datasets.size()), p_(1), raw_(datasets.size(), false) {
  int me = 0;
  MPI_Comm_size(comm, &p_), MPI_Comm_rank(comm, &me);
  std::map<std::string, const Slice*> slice_of;
  for (const Slice& s : mine) slice_of[s.dataset] = &s;
  std::vector<std::int64_t> local(3 * D_, 0);
  all_.resize(3 * D_ * std::size_t(p_));
  for (std::size_t i = 0; i < D_; ++i)
    if (const auto it = slice_of.find(datasets[i].name); it != slice_of.end() && it->second->begin < it->second->end)
      local[3 * i] = it->second->begin, local[3 * i + 1] = it->second->end, local[3 * i + 2] = !it->second->window.empty();
  MPI_Allgather(local.data(), static_cast<int>(3 * D_), MPI_INT64_T, all_.data(), static_cast<int>(3 * D_), MPI_INT64_T, comm);
  for (std::size_t i = 0; i < D_; ++i) {
    std::vector<std::pair<std::int64_t, std::int64_t>> tiles;
    bool window = false;
    for (int r = 0; r < p_; ++r) {
      window |= all_[(std::size_t(r) * D_ + i) * 3 + 2] != 0;
      if (range(r, i).first < range(r, i).second) tiles.push_back(range(r, i));
    }
    std::sort(tiles.begin(), tiles.end());
    std::int64_t next = 0;
    for (const auto& [b, e] : tiles) next = b == next ? e : -1;
    raw_[i] = !window && !datasets[i].shape.empty() && next == numel(datasets[i].shape);
  }
}

bool WholeChunks::all_raw() const { return std::all_of(raw_.begin(), raw_.end(), [](bool r) { return r; }); }

std::pair<std::int64_t, std::int64_t> WholeChunks::range(int r, std::size_t i) const {
  return {all_[(std::size_t(r) * D_ + i) * 3], all_[(std::size_t(r) * D_ + i) * 3 + 1]};
}

int WholeChunks::owner(std::size_t i, std::int64_t e) const {
  for (int r = 0; r < p_; ++r)
    if (const auto [b, x] = range(r, i); e >= b && e < x) return r;
  return -1;
}

ChunkAddresses chunk_addresses(const std::string& path, hid_t file, const std::vector<Dataset>& datasets,
                               const WholeChunks& plan) {
  ChunkAddresses out(datasets.size());
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    if (!plan.raw(i)) continue;
    const Dataset& d = datasets[i];
    const std::int64_t rows = chunk_rows(d.shape);
    const std::size_t stored = chunk_stored_bytes(d.shape);
    const hid_t ds = H5Dopen2(file, d.name.c_str(), H5P_DEFAULT);
    if (ds < 0) throw CheckpointError(fmt::format("{}: open {}", path, d.name));
    std::vector<hsize_t> offset(d.shape.size(), 0);
    for (std::int64_t c = 0; c < chunk_count(d.shape); ++c) {
      offset[0] = hsize_t(c * rows);
      unsigned mask = 0;
      haddr_t addr = 0;
      hsize_t size = 0;
      if (H5Dget_chunk_info_by_coord(ds, offset.data(), &mask, &addr, &size) < 0 || addr == HADDR_UNDEF || size != stored) {
        H5Dclose(ds);
        throw CheckpointError(
            fmt::format("{}: {}: HDF5 did not allocate the chunk at row {} as {} bytes", path, d.name, offset[0], stored));
      }
      out[i].push_back(addr);
    }
    H5Dclose(ds);
  }
  return out;
}

void write_whole_chunks(const std::string& path, MPI_Comm comm, const std::vector<Dataset>& datasets,
                        const std::vector<Slice>& mine, const WholeChunks& plan, const ChunkAddresses& addresses) {
  int p = 1, me = 0;
  MPI_Comm_size(comm, &p), MPI_Comm_rank(comm, &me);
  const std::size_t D = datasets.size();
  std::map<std::string, const Slice*> slice_of;
  for (const Slice& s : mine) slice_of[s.dataset] = &s;
  auto range = [&](int r, std::size_t i) { return plan.range(r, i); };
  auto owner = [&](std::size_t i, std::int64_t e) { return plan.owner(i, e); };

  // From here every rank reaches the two exchanges and the final agreement whatever fails
  // on it (a rank leaving a collective early would leave the others waiting).
  std::string error;
  auto note = [&](const std::exception& e) {
    if (error.empty()) error = e.what();
  };
  // Pieces of other ranks' chunks go to their writers.
  std::vector<std::vector<char>> out(static_cast<std::size_t>(p));
  try {
    for (std::size_t i = 0; i < D; ++i) {
      if (!plan.raw(i)) continue;
      const auto [b, e] = range(me, i);
      if (b >= e) continue;
      const std::int64_t per = chunk_rows(datasets[i].shape) * (numel(datasets[i].shape) / datasets[i].shape[0]);
      const float* data = slice_of.at(datasets[i].name)->data;
      for (std::int64_t c = b / per; c * per < e; ++c) {
        const int w = owner(i, c * per);
        if (w == me) continue;
        const std::int64_t lo = std::max(b, c * per), hi = std::min(e, (c + 1) * per);
        const Header h{static_cast<std::int64_t>(i), lo, hi - lo};
        auto& o = out[std::size_t(w)];
        const auto* hp = reinterpret_cast<const char*>(&h);
        o.insert(o.end(), hp, hp + sizeof h);
        const auto* dp = reinterpret_cast<const char*>(data + (lo - b));
        o.insert(o.end(), dp, dp + (hi - lo) * std::int64_t(sizeof(float)));
      }
    }
  } catch (const std::exception& e) {
    note(e);
  }
  // MPI counts are ints: at most one piece per range boundary per dataset travels, far
  // below 2 GiB; past it the save fails on every rank instead of wrapping.
  const auto P = static_cast<std::size_t>(p);
  std::vector<int> send_n(P), recv_n(P), send_at(P), recv_at(P);
  std::vector<char> send;
  std::size_t bytes = 0;
  for (const auto& o : out) bytes += o.size();
  if (!error.empty() || bytes > std::size_t(std::numeric_limits<int>::max())) {
    if (error.empty()) error = fmt::format("{}: {} bytes of chunk pieces to exchange, more than MPI counts hold", path, bytes);
    out.assign(P, {});
  }
  try {
    send.reserve(bytes);
  } catch (const std::exception& e) {
    note(e), out.assign(P, {});
  }
  for (int r = 0; r < p; ++r) {
    send_at[std::size_t(r)] = static_cast<int>(send.size());
    send_n[std::size_t(r)] = static_cast<int>(out[std::size_t(r)].size());
    send.insert(send.end(), out[std::size_t(r)].begin(), out[std::size_t(r)].end());
  }
  MPI_Alltoall(send_n.data(), 1, MPI_INT, recv_n.data(), 1, MPI_INT, comm);
  std::size_t total = 0;
  for (int r = 0; r < p; ++r) total += std::size_t(recv_n[std::size_t(r)]);
  if (total > std::size_t(std::numeric_limits<int>::max())) {
    if (error.empty()) error = fmt::format("{}: {} bytes of chunk pieces to receive, more than MPI counts hold", path, total);
    std::fill(recv_n.begin(), recv_n.end(), 0);  // still in the collective, receiving nothing: the save fails below
    total = 0;
  }
  for (int r = 0, at = 0; r < p; ++r) recv_at[std::size_t(r)] = at, at += recv_n[std::size_t(r)];
  std::vector<char> recv(total);
  MPI_Alltoallv(send.data(), send_n.data(), send_at.data(), MPI_CHAR, recv.data(), recv_n.data(), recv_at.data(), MPI_CHAR,
                comm);
  Pieces pieces;
  for (std::size_t at = 0; error.empty() && at < recv.size();) {
    Header h;
    std::memcpy(&h, recv.data() + at, sizeof h);
    const auto& shape = datasets[std::size_t(h.dataset)].shape;
    const std::int64_t per = chunk_rows(shape) * (numel(shape) / shape[0]);
    pieces.emplace(std::pair{h.dataset, h.begin / per}, recv.data() + at);
    at += sizeof h + std::size_t(h.count) * sizeof(float);
  }

  // Each chunk this rank writes: checksum, then the payload and the 4 bytes at its address.
  // A chunk inside this rank's range is written from the tensor itself. A failure on any
  // rank (a full disk) fails the save on every rank, before any further collective call.
  try {
    if (error.empty()) write_owned(path, datasets, plan, me, slice_of, pieces, addresses);
  } catch (const std::exception& e) {
    note(e);
  }
  int failed = error.empty() ? p : me, first = p;
  MPI_Allreduce(&failed, &first, 1, MPI_INT, MPI_MIN, comm);
  if (first < p)
    throw CheckpointError(error.empty() ? fmt::format("{}: rank {} could not write its chunks", path, first) : error);
}

namespace {
void write_owned(const std::string& path, const std::vector<Dataset>& datasets, const WholeChunks& plan, int me,
                 const std::map<std::string, const Slice*>& slice_of, const Pieces& pieces, const ChunkAddresses& addresses) {
  File f(path);
  std::vector<unsigned char> buf;
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    if (!plan.raw(i)) continue;
    const auto [b, e] = plan.range(me, i);
    if (b >= e) continue;
    const Dataset& d = datasets[i];
    const std::int64_t n = numel(d.shape), per = chunk_rows(d.shape) * (n / d.shape[0]);
    const std::size_t payload = std::size_t(per) * sizeof(float);
    const float* data = slice_of.at(d.name)->data;
    for (std::int64_t c = b / per; c * per < e; ++c) {
      if (plan.owner(i, c * per) != me) continue;
      const std::int64_t hi = std::min(n, (c + 1) * per);
      const unsigned char* bytes = nullptr;
      if (c * per >= b && (c + 1) * per <= e) {
        bytes = reinterpret_cast<const unsigned char*>(data + (c * per - b));
      } else {  // pieces from other ranks, or the dataset's last chunk (stored at full size)
        buf.assign(payload, 0);
        const std::int64_t lo = std::max(b, c * per), mine_hi = std::min(e, hi);
        std::memcpy(buf.data() + std::size_t(lo - c * per) * sizeof(float), data + (lo - b),
                    std::size_t(mine_hi - lo) * sizeof(float));
        const auto [first, last] = pieces.equal_range({std::int64_t(i), c});
        for (auto it = first; it != last; ++it) {
          Header h;
          std::memcpy(&h, it->second, sizeof h);
          std::memcpy(buf.data() + std::size_t(h.begin - c * per) * sizeof(float), it->second + sizeof h,
                      std::size_t(h.count) * sizeof(float));
        }
        bytes = buf.data();
      }
      auto trailer = fletcher32_trailer(bytes, payload);
      const iovec parts[2] = {{const_cast<unsigned char*>(bytes), payload}, {trailer.data(), 4}};
      f.write(d.name, addresses[i][std::size_t(c)], parts, 2, payload + 4);
    }
  }
  f.sync();
}
}  // namespace

}  // namespace moe::ckpt::detail
