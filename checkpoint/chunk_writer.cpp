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
#include "comm/host_values.h"
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

std::int64_t per_chunk(const Shape& s) {
  return chunk_rows(s) * (s.empty() ? 1 : numel(s) / std::max<std::int64_t>(s[0], 1));
}

void write_owned(const std::string& path, const std::vector<Dataset>& datasets, const WholeChunks& plan, int me,
                 Pieces& pieces, const ChunkAddresses& addresses);

}  // namespace

std::int64_t chunk_rows(const Shape& s) {
  if (s.empty()) return 1;
  // As few chunks as keep each within 8 MiB, their rows spread evenly: HDF5 stores a last,
  // partial chunk at full size, so 8 MiB chunks of a 12 MiB tensor would store 16 MiB.
  const std::int64_t rows = std::max<std::int64_t>(s[0], 1), chunks = (numel(s) + (1 << 21) - 1) >> 21;
  return std::clamp<std::int64_t>((rows + chunks - 1) / std::max<std::int64_t>(chunks, 1), 1, rows);
}

std::int64_t chunk_count(const Shape& s) {
  if (s.empty()) return 1;
  const std::int64_t rows = chunk_rows(s);
  return (s[0] + rows - 1) / rows;
}

std::size_t chunk_stored_bytes(const Shape& s) { return std::size_t(per_chunk(s)) * sizeof(float) + 4; }

WholeChunks::WholeChunks(Communicator& comm, const std::vector<Dataset>& datasets, const std::vector<Slice>& mine)
    : D_(datasets.size()), p_(comm.size()), windowed_(datasets.size(), false), per_(datasets.size()) {
  std::map<std::string, const Slice*> slice_of;
  for (const Slice& s : mine) slice_of[s.dataset] = &s;
  std::vector<std::int64_t> local(3 * D_, 0);
  for (std::size_t i = 0; i < D_; ++i)
    if (const auto it = slice_of.find(datasets[i].name); it != slice_of.end() && it->second->begin < it->second->end)
      local[3 * i] = it->second->begin, local[3 * i + 1] = it->second->end,
                local[3 * i + 2] = !it->second->window.empty();
  all_ = all_gather_ints(comm, local);
  for (std::size_t i = 0; i < D_; ++i) {
    per_[i] = per_chunk(datasets[i].shape);
    for (int r = 0; r < p_; ++r) windowed_[i] = windowed_[i] || all_[(std::size_t(r) * D_ + i) * 3 + 2] != 0;
  }
}

int WholeChunks::owner(std::size_t i, std::int64_t c) const {
  if (!windowed_[i]) {
    const std::int64_t e = c * per_[i];
    for (int r = 0; r < p_; ++r)
      if (all_[(std::size_t(r) * D_ + i) * 3] <= e && e < all_[(std::size_t(r) * D_ + i) * 3 + 1]) return r;
  }
  return static_cast<int>((c + static_cast<std::int64_t>(i)) % p_);
}

ChunkAddresses chunk_addresses(const std::string& path, hid_t file, const std::vector<Dataset>& datasets) {
  ChunkAddresses out(datasets.size());
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    const Dataset& d = datasets[i];
    const std::int64_t rows = chunk_rows(d.shape);
    const std::size_t stored = chunk_stored_bytes(d.shape);
    const hid_t ds = H5Dopen2(file, d.name.c_str(), H5P_DEFAULT);
    if (ds < 0) throw CheckpointError(fmt::format("{}: open {}", path, d.name));
    std::vector<hsize_t> offset(d.shape.size(), 0);
    for (std::int64_t c = 0; c < chunk_count(d.shape); ++c) {
      if (!offset.empty()) offset[0] = hsize_t(c * rows);
      unsigned mask = 0;
      haddr_t addr = 0;
      hsize_t size = 0;
      if (H5Dget_chunk_info_by_coord(ds, offset.data(), &mask, &addr, &size) < 0 || addr == HADDR_UNDEF ||
          size != stored) {
        H5Dclose(ds);
        throw CheckpointError(fmt::format("{}: {}: HDF5 did not allocate the chunk at row {} as {} bytes", path, d.name,
                                          c * rows, stored));
      }
      out[i].push_back(addr);
    }
    H5Dclose(ds);
  }
  return out;
}

namespace {

// This rank's runs of every dataset cut at chunk boundaries, each piece handed to
// `to(writer, dataset, chunk, begin, count, data)`.
template <class F>
void for_each_piece(const std::vector<Dataset>& datasets, const std::vector<Slice>& mine, const WholeChunks& plan,
                    F&& to) {
  std::map<std::string, const Slice*> slice_of;
  for (const Slice& s : mine) slice_of[s.dataset] = &s;
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    const auto it = slice_of.find(datasets[i].name);
    if (it == slice_of.end() || it->second->begin >= it->second->end) continue;
    const Slice& s = *it->second;
    const std::int64_t per = per_chunk(datasets[i].shape);
    for (const Run& r : slice_runs(datasets[i].shape, s, 0, datasets[i].shape.empty() ? 1 : datasets[i].shape[0]))
      for (std::int64_t a = r.begin; a < r.begin + r.count;) {
        const std::int64_t c = a / per, b = std::min(r.begin + r.count, (c + 1) * per);
        to(plan.owner(i, c), i, c, a, b - a, s.data + r.mem + (a - r.begin));
        a = b;
      }
  }
}

// The pieces this rank sends: a header and its floats each, packed for their writers in rank
// order straight into one buffer of words (headers and floats are whole words).
struct Outgoing {
  Tensor words;                        // i32 host tensor
  std::vector<std::int64_t> words_to;  // per rank
};

// Pieces of this rank's own chunks go to `local`; the rest are packed (sized by a first pass).
// MPI counts are ints: the pieces that travel (those of chunks straddling a range boundary,
// and (p-1)/p of column-split tensor-parallel windows) stay far below 8 GiB per rank for any
// model this holds; past it the save fails on every rank instead of wrapping.
Outgoing pack_pieces(const std::string& path, const std::vector<Dataset>& datasets, const std::vector<Slice>& mine,
                     const WholeChunks& plan, int p, int me, Pieces& local) {
  const auto P = static_cast<std::size_t>(p);
  std::vector<std::size_t> bytes(P, 0);
  for_each_piece(datasets, mine, plan,
                 [&](int w, std::size_t, std::int64_t, std::int64_t, std::int64_t n, const float*) {
                   if (w != me) bytes[std::size_t(w)] += sizeof(Header) + std::size_t(n) * sizeof(float);
                 });
  std::size_t total = 0;
  for (std::size_t r = 0; r < P; ++r) total += bytes[r];
  if (total / 4 > std::size_t(std::numeric_limits<int>::max()))
    throw CheckpointError(
        fmt::format("{}: {} bytes of chunk pieces to exchange, more than MPI counts hold", path, total));
  Outgoing out{word_buffer(total), std::vector<std::int64_t>(P)};
  char* base = reinterpret_cast<char*>(out.words.data<std::int32_t>());
  std::vector<std::size_t> put(P);
  for (std::size_t r = 0, at = 0; r < P; ++r) put[r] = at, out.words_to[r] = std::int64_t(bytes[r] / 4), at += bytes[r];
  for_each_piece(datasets, mine, plan,
                 [&](int w, std::size_t i, std::int64_t c, std::int64_t a, std::int64_t n, const float* data) {
                   if (w == me) return local[{i, c}].push_back({a, n, data});
                   const Header h{static_cast<std::int64_t>(i), a, n};
                   std::memcpy(base + put[std::size_t(w)], &h, sizeof h);
                   std::memcpy(base + put[std::size_t(w)] + sizeof h, data, std::size_t(n) * sizeof(float));
                   put[std::size_t(w)] += sizeof h + std::size_t(n) * sizeof(float);
                 });
  return out;
}

// The pieces other ranks sent, as pieces pointing into `received` (which must outlive them).
void unpack_pieces(const Tensor& received, const std::vector<Dataset>& datasets, Pieces& pieces) {
  const char* base = reinterpret_cast<const char*>(received.data<std::int32_t>());
  const std::size_t size = std::size_t(received.numel()) * 4;
  for (std::size_t at = 0; at < size;) {
    Header h;
    std::memcpy(&h, base + at, sizeof h);
    const std::size_t i = std::size_t(h.dataset);
    pieces[{i, h.begin / per_chunk(datasets[i].shape)}].push_back(
        {h.begin, h.count, reinterpret_cast<const float*>(base + at + sizeof h)});
    at += sizeof h + std::size_t(h.count) * sizeof(float);
  }
}

}  // namespace

OwnedChunks gather_chunks(const std::string& path, Communicator& comm, const std::vector<Dataset>& datasets,
                          const std::vector<Slice>& mine, const WholeChunks& plan) {
  const int p = comm.size(), me = comm.rank();
  // From here every rank reaches the two exchanges and the final agreement whatever fails
  // on it (a rank leaving a collective early would leave the others waiting).
  OwnedChunks owned{{}, word_buffer(0), ""};
  Outgoing out{word_buffer(0), std::vector<std::int64_t>(std::size_t(p), 0)};
  try {
    out = pack_pieces(path, datasets, mine, plan, p, me, owned.pieces);
  } catch (const std::exception& e) {
    owned.error = e.what();  // still in the exchange, sending nothing: the save fails at agree()
  }
  std::vector<std::int64_t> words_from = all_to_all_ints(comm, out.words_to);
  std::int64_t total = 0;
  for (const std::int64_t n : words_from) total += n;
  if (total > std::numeric_limits<int>::max()) {
    if (owned.error.empty())
      owned.error = fmt::format("{}: {} bytes of chunk pieces to receive, more than MPI counts hold", path, 4 * total);
    std::fill(words_from.begin(), words_from.end(), 0);  // still in the collective, receiving nothing
    total = 0;
  }
  owned.received = word_buffer(std::size_t(total) * 4);
  comm.all_to_all_v(owned.received, words_from, out.words, out.words_to);
  if (owned.error.empty()) unpack_pieces(owned.received, datasets, owned.pieces);
  return owned;
}

// Each chunk this rank writes: checksum, then the payload and the 4 bytes at its address. A
// chunk that is one piece of this rank's memory is written from that memory itself.
void write_chunks(const std::string& path, const std::vector<Dataset>& datasets, const WholeChunks& plan, int me,
                  OwnedChunks& owned, const ChunkAddresses& addresses) {
  if (!owned.error.empty()) return;
  try {
    write_owned(path, datasets, plan, me, owned.pieces, addresses);
  } catch (const std::exception& e) {
    owned.error = e.what();
  }
}

// A failure on any rank (a full disk) fails the save on every rank, before any further
// collective call.
void agree(const std::string& error, Communicator& comm) {
  const int first = first_rank_where(comm, !error.empty());
  if (first >= 0) share_error(error, first, comm);  // every rank throws the first failing rank's reason
}

void write_whole_chunks(const std::string& path, Communicator& comm, const std::vector<Dataset>& datasets,
                        const std::vector<Slice>& mine, const WholeChunks& plan, const ChunkAddresses& addresses) {
  OwnedChunks owned = gather_chunks(path, comm, datasets, mine, plan);
  write_chunks(path, datasets, plan, comm.rank(), owned, addresses);
  agree(owned.error, comm);
}

void share_error(const std::string& error, int root, Communicator& comm) {
  const std::string shared = comm.broadcast_text(error, root);
  if (!shared.empty()) throw CheckpointError(shared);
}

namespace {
void write_owned(const std::string& path, const std::vector<Dataset>& datasets, const WholeChunks& plan, int me,
                 Pieces& pieces, const ChunkAddresses& addresses) {
  File f(path);
  std::vector<unsigned char> buf;
  for (std::size_t i = 0; i < datasets.size(); ++i) {
    const Dataset& d = datasets[i];
    const std::int64_t n = numel(d.shape), per = per_chunk(d.shape);
    const std::size_t payload = std::size_t(per) * sizeof(float);
    for (std::int64_t c = 0; c < chunk_count(d.shape); ++c) {
      if (plan.owner(i, c) != me) continue;
      auto& list = pieces[{i, c}];
      std::sort(list.begin(), list.end(), [](const Piece& a, const Piece& b) { return a.begin < b.begin; });
      // The ranks' pieces must tile the chunk's elements exactly (the last chunk of a dataset
      // is shorter; HDF5 stores it at full size, the rest never read).
      std::int64_t next = c * per;
      for (const Piece& piece : list) next = piece.begin == next ? next + piece.count : -1;
      if (next != std::min(n, (c + 1) * per))
        throw CheckpointError(fmt::format("{}: {}: the ranks' slices do not cover the chunk at row {} exactly once",
                                          path, d.name, c * chunk_rows(d.shape)));
      const unsigned char* bytes = nullptr;
      if (list.size() == 1 && list[0].count == per) {
        bytes = reinterpret_cast<const unsigned char*>(list[0].data);
      } else {
        buf.assign(payload, 0);
        for (const Piece& piece : list)
          std::memcpy(buf.data() + std::size_t(piece.begin - c * per) * sizeof(float), piece.data,
                      std::size_t(piece.count) * sizeof(float));
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
