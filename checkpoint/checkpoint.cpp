#include "checkpoint/checkpoint.h"

#include "checkpoint/chunk_reader.h"
#include "checkpoint/chunk_writer.h"
#include "checkpoint/fletcher32.h"
#include "checkpoint/holes_driver.h"
#include "comm/host_values.h"

#include <hdf5.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <system_error>
#include <thread>

namespace moe::ckpt {
namespace {

// RAII for an HDF5 identifier and the function that closes it.
class Id {
 public:
  Id(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~Id() {
    if (id_ >= 0) close_(id_);
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }
  void release() { id_ = -1; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// The innermost message of HDF5's error stack: the most specific reason.
std::string hdf5_reason() {
  std::string reason;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
        auto& r = *static_cast<std::string*>(out);
        if (r.empty() && e->desc && *e->desc) r = e->desc;
        return 0;
      },
      &reason);
  H5Eclear2(H5E_DEFAULT);
  if (reason.empty()) return "unknown HDF5 error";
  // The default file driver reports a failed write(2) over several lines ("file write failed:
  // time = ..., errno = 27, error message = 'File too large', ..."): keep the system's words.
  const std::string key = "error message = '";
  if (const auto at = reason.find(key); at != std::string::npos) {
    const auto end = reason.find('\'', at + key.size()), colon = reason.find(':');
    reason = (colon < at ? reason.substr(0, colon) + ": " : std::string()) +
             reason.substr(at + key.size(), end - at - key.size());
  }
  std::replace(reason.begin(), reason.end(), '\n', ' ');  // one line, whatever HDF5 said
  return reason;
}

// Errors come back as return codes; HDF5 prints nothing itself.
void quiet() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

void check(herr_t rc, const std::string& path, const std::string& what) {
  if (rc < 0) throw CheckpointError(fmt::format("{}: {}: {}", path, what, hdf5_reason()));
}
hid_t check_id(hid_t id, const std::string& path, const std::string& what) {
  if (id < 0) throw CheckpointError(fmt::format("{}: {}: {}", path, what, hdf5_reason()));
  return id;
}

std::vector<hsize_t> dims_of(const Shape& s) { return {s.begin(), s.end()}; }

// Chunks of about 8 MiB (fewer, longer reads and writes; a 1 MiB chunk loaded 10-15% slower):
// whole trailing dimensions, as many leading rows as fit (detail::chunk_rows).
std::vector<hsize_t> chunk_of(const Shape& s) {
  std::vector<hsize_t> c = dims_of(s);
  if (!c.empty()) c[0] = static_cast<hsize_t>(detail::chunk_rows(s));
  return c;
}

// A new file (truncating) through the driver `fapl` sets up. The 1.10 file format checksums
// its metadata (superblock v3, object headers v2, v2 B-trees), so a damaged header is
// refused when read instead of being decoded; the Fletcher32 filter covers the data.
Id create_file(const std::string& path, hid_t fapl) {
  check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110), path, "file format");
  const hid_t f = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (f < 0) throw CheckpointError(fmt::format("{}: cannot create ({})", path, hdf5_reason()));
  return Id(f, H5Fclose);
}

// An existing file, read-only, through HDF5's default driver.
Id open_file(const std::string& path) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0)
    throw CheckpointError(
        fmt::format("{}: cannot open ({}): not a checkpoint, truncated, or damaged", path, hdf5_reason()));
  return Id(f, H5Fclose);
}

// This rank's selection of a dataset: the union of its slice's blocks, or nothing.
void select(hid_t space, const Shape& shape, const Slice* s, const std::string& path) {
  if (!s || s->begin >= s->end) {
    check(H5Sselect_none(space), path, "select");
    return;
  }
  bool first = true;
  for (const Block& b : slice_blocks(shape, *s)) {
    const auto off = dims_of(b.offset), cnt = dims_of(b.count);
    check(H5Sselect_hyperslab(space, first ? H5S_SELECT_SET : H5S_SELECT_OR, off.data(), nullptr, cnt.data(), nullptr),
          path, "select " + s->dataset);
    first = false;
  }
}

// One slice per dataset per rank (a flat range is contiguous in memory).
std::map<std::string, const Slice*> by_dataset(const std::vector<Slice>& mine) {
  std::map<std::string, const Slice*> m;
  for (const Slice& s : mine)
    MOE_CHECK(m.emplace(s.dataset, &s).second, CheckpointError, "checkpoint: two slices of {} on one rank", s.dataset);
  return m;
}

template <class T>
void write_attr(hid_t file, const char* name, hid_t type, const T& v, const std::string& path) {
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id a(check_id(H5Acreate2(file, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT), path, name), H5Aclose);
  check(H5Awrite(a.get(), type, &v), path, name);
}
void write_text(hid_t file, const char* name, const std::string& v, const std::string& path) {
  Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), std::max<std::size_t>(v.size(), 1));
  Id space(H5Screate(H5S_SCALAR), H5Sclose);
  Id a(check_id(H5Acreate2(file, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), path, name), H5Aclose);
  std::string padded = v.empty() ? std::string(1, '\0') : v;
  check(H5Awrite(a.get(), type.get(), padded.data()), path, name);
}
template <class T>
T read_attr(hid_t file, const char* name, hid_t type, const std::string& path) {
  Id a(check_id(H5Aopen(file, name, H5P_DEFAULT), path, std::string("attribute ") + name), H5Aclose);
  T v{};
  check(H5Aread(a.get(), type, &v), path, name);
  return v;
}
std::string read_text(hid_t file, const char* name, const std::string& path) {
  Id a(check_id(H5Aopen(file, name, H5P_DEFAULT), path, std::string("attribute ") + name), H5Aclose);
  Id type(H5Aget_type(a.get()), H5Tclose);
  std::string v(H5Tget_size(type.get()), '\0');
  check(H5Aread(a.get(), type.get(), v.data()), path, name);
  v.erase(std::find(v.begin(), v.end(), '\0'), v.end());
  return v;
}

// A damaged file: one line naming it, the dataset and what failed, and what to do.
CheckpointError damaged(const std::string& path, const std::string& dataset, const std::string& what) {
  return CheckpointError(
      fmt::format("{}: dataset {}: {}: the file is damaged; use an earlier checkpoint", path, dataset, what));
}

// The chunks of a dataset written by write(): whole trailing dimensions, `rows` leading
// rows each, Fletcher32 the only filter. HDF5 says where each chunk the slice touches is;
// `sink` gets it with the parts the slice holds (for the chunk reader, which reads and
// verifies it: HDF5's own read copies every chunk once more and checksums it at a tenth of
// the speed). A chunk that fails has already been copied in part: the load fails and the
// process ends, as a failed load does. A tensor-parallel window that cuts rows reads whole
// chunks (a checksum covers a chunk) and keeps its part of each row. false: the dataset is
// laid out otherwise (another writer), nothing handed over.
template <class Sink>
bool chunks_of(hid_t ds, const std::string& path, const Dataset& d, const Slice& s, Sink&& sink) {
  Id dcpl(H5Dget_create_plist(ds), H5Pclose);
  const int nd = static_cast<int>(d.shape.size());
  std::vector<hsize_t> chunk(static_cast<std::size_t>(std::max(nd, 1)));
  unsigned flags = 0;
  std::size_t cd = 0;
  const bool ours = nd > 0 && H5Pget_layout(dcpl.get()) == H5D_CHUNKED &&
                    H5Pget_chunk(dcpl.get(), nd, chunk.data()) == nd && H5Pget_nfilters(dcpl.get()) == 1 &&
                    H5Pget_filter2(dcpl.get(), 0, &flags, &cd, nullptr, 0, nullptr, nullptr) == H5Z_FILTER_FLETCHER32 &&
                    std::equal(chunk.begin() + 1, chunk.end(), d.shape.begin() + 1,
                               [](hsize_t a, std::int64_t b) { return a == static_cast<hsize_t>(b); });
  if (!ours) return false;
  std::int64_t inner = 1;
  for (int k = 1; k < nd; ++k) inner *= d.shape[static_cast<std::size_t>(k)];
  const std::int64_t per_chunk = static_cast<std::int64_t>(chunk[0]) * inner;  // elements
  const std::size_t payload = static_cast<std::size_t>(per_chunk) * sizeof(float);
  // The slice's runs, cut at chunk boundaries: the parts of each chunk it touches.
  auto* out = reinterpret_cast<unsigned char*>(s.data);
  std::map<std::int64_t, std::vector<detail::ChunkPart>> parts;
  for (const Run& r : slice_runs(d.shape, s, 0, d.shape[0]))
    for (std::int64_t a = r.begin; a < r.begin + r.count;) {
      const std::int64_t c = a / per_chunk, b = std::min(r.begin + r.count, (c + 1) * per_chunk);
      parts[c].push_back({static_cast<std::size_t>(a) * sizeof(float), static_cast<std::size_t>(b - a) * sizeof(float),
                          out + static_cast<std::size_t>(r.mem + (a - r.begin)) * sizeof(float)});
      a = b;
    }
  std::vector<hsize_t> offset(static_cast<std::size_t>(nd), 0);
  for (auto& [c, chunk_parts] : parts) {
    offset[0] = static_cast<hsize_t>(c) * chunk[0];
    unsigned mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t stored = 0;
    if (H5Dget_chunk_info_by_coord(ds, offset.data(), &mask, &addr, &stored) < 0 || addr == HADDR_UNDEF)
      throw damaged(path, d.name, fmt::format("the chunk at row {} is missing", offset[0]));
    // A set mask bit would mean the chunk was stored without its checksum: our writer never
    // does that, so such a chunk cannot be trusted.
    if (mask != 0)
      throw damaged(path, d.name, fmt::format("the chunk at row {} was stored without its checksum", offset[0]));
    if (stored != payload + 4)
      throw damaged(path, d.name,
                    fmt::format("the chunk at row {} is {} bytes, its shape says {}", offset[0], stored, payload + 4));
    sink(detail::ChunkRead{.dataset = d.name,
                           .row = offset[0],
                           .addr = addr,
                           .payload = payload,
                           .base = static_cast<std::size_t>(c) * payload,
                           .parts = std::move(chunk_parts)});
  }
  return true;
}

// A dataset laid out otherwise (another writer): HDF5 selects the slice and verifies the
// checksums itself.
void read_through_hdf5(hid_t ds, const std::string& path, const Dataset& d, const Slice& s) {
  const auto dims = dims_of(d.shape);
  Id fs(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  select(fs.get(), d.shape, &s, path);
  const hsize_t n = static_cast<hsize_t>(s.end - s.begin);
  Id mem(H5Screate_simple(1, &n, nullptr), H5Sclose);
  if (H5Dread(ds, H5T_NATIVE_FLOAT, mem.get(), fs.get(), H5P_DEFAULT, s.data) < 0)
    throw damaged(path, d.name, fmt::format("cannot read ({})", hdf5_reason()));
}

// Checks `file` against `expected` (one error listing every mismatch) and calls
// each(dataset id, dataset, slice) for every slice in `mine`, in file order.
template <class Each>
void for_each_slice(hid_t file, const std::string& path, const std::vector<Dataset>& expected,
                    const std::vector<Slice>& mine, Each&& each) {
  const auto slices = by_dataset(mine);
  std::vector<std::string> bad;
  for (const Dataset& d : expected) {
    const hid_t id = H5Dopen2(file, d.name.c_str(), H5P_DEFAULT);
    if (id < 0) {
      const std::string reason = hdf5_reason();
      const htri_t exists = H5Lexists(file, d.name.c_str(), H5P_DEFAULT);
      H5Eclear2(H5E_DEFAULT);
      if (exists > 0) throw damaged(path, d.name, fmt::format("cannot open ({})", reason));
      bad.push_back(fmt::format("{} missing", d.name));
      continue;
    }
    Id ds(id, H5Dclose);
    Id space(H5Dget_space(id), H5Sclose);
    std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(0, H5Sget_simple_extent_ndims(space.get()))));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    Id type(H5Dget_type(id), H5Tclose);
    if (dims != dims_of(d.shape))
      bad.push_back(fmt::format("{} is {} in the file, {} in the model", d.name,
                                shape_str(Shape(dims.begin(), dims.end())), shape_str(d.shape)));
    else if (H5Tequal(type.get(), H5T_IEEE_F32LE) <= 0)  // the chunk reader copies bytes as f32
      bad.push_back(fmt::format("{} is not little-endian float32 in the file", d.name));
    else if (const auto it = slices.find(d.name);
             bad.empty() && it != slices.end() && it->second->begin < it->second->end)
      each(id, d, *it->second);
  }
  if (!bad.empty()) {
    std::string list;
    for (std::size_t i = 0; i < std::min<std::size_t>(bad.size(), 4); ++i) list += (i ? "; " : "") + bad[i];
    if (bad.size() > 4) list += fmt::format("; and {} more", bad.size() - 4);
    throw CheckpointError(fmt::format("{}: does not match the model ({} tensors differ): {}", path, bad.size(), list));
  }
}

}  // namespace

namespace {

void create_datasets(hid_t file, const std::string& path, const std::vector<Dataset>& datasets) {
  Id lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  for (const Dataset& d : datasets) {
    const auto dims = dims_of(d.shape), chunk = chunk_of(d.shape);
    Id space(check_id(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), path, d.name), H5Sclose);
    Id dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    check(H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data()), path, d.name);
    check(H5Pset_fletcher32(dcpl.get()), path, d.name);
    // Every element is written: no fill values first.
    check(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), path, d.name);
    Id ds(check_id(H5Dcreate2(file, d.name.c_str(), H5T_IEEE_F32LE, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
                   path, "create " + d.name),
          H5Dclose);
  }
}

void write_meta(hid_t f, const std::string& path, const Meta& meta) {
  MOE_CHECK(!meta.has("format_version"), CheckpointError, "{}: format_version is the checkpoint's own attribute", path);
  write_attr(f, "format_version", H5T_NATIVE_INT64, kFormatVersion, path);
  for (const auto& [name, value] : meta.attrs)
    std::visit(
        [&, &name = name](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::string>) write_text(f, name.c_str(), v, path);
          else if constexpr (std::is_same_v<T, double>) write_attr(f, name.c_str(), H5T_NATIVE_DOUBLE, v, path);
          else if constexpr (std::is_same_v<T, std::uint64_t>) write_attr(f, name.c_str(), H5T_NATIVE_UINT64, v, path);
          else write_attr(f, name.c_str(), H5T_NATIVE_INT64, v, path);
        },
        value);
}

// Fills an open file with `body`, then closes it. A failed write (a full disk) leaves HDF5
// unable to flush the file: closing it would fail again and leave the library's state torn
// (HDF5 1.10 then crashes at exit), so the handle is let go; the temporary file is never
// renamed into place.
template <class Body>
void fill_and_close(Id& file, const std::string& path, Body body) {
  try {
    body(file.get());
    check(H5Fclose(file.get()), path, "close");
  } catch (...) {
    file.release();
    throw;
  }
  file.release();
}

// Rank 0 creates the file alone, every chunk allocated at its stored size but left a hole
// (holes_driver.h), and the attributes; every rank learns the chunks' addresses, where the
// ranks then write the chunks (chunk_writer.h). Parallel HDF5 would write every chunk of a
// filtered dataset with fill values when creating it (the file written twice) and leaves
// ranks waiting in collective calls another rank has failed out of; here rank 0's error
// reaches every rank.
detail::ChunkAddresses skeleton(const std::string& path, Communicator& comm, const Meta& meta,
                                const std::vector<Dataset>& datasets) {
  const int me = comm.rank();
  std::vector<std::int64_t> flat;  // every chunk's address, dataset by dataset
  std::string error;
  if (me == 0) {
    try {
      std::size_t biggest = 0;
      for (const Dataset& d : datasets) biggest = std::max(biggest, detail::chunk_stored_bytes(d.shape));
      const std::vector<unsigned char> hole(biggest);  // handed to HDF5, never written
      Id fapl(detail::holes_fapl(hole.data(), hole.size()), H5Pclose);
      Id file = create_file(path, fapl.get());
      fill_and_close(file, path, [&](hid_t f) {
        create_datasets(f, path, datasets);
        for (const Dataset& d : datasets) {
          Id ds(check_id(H5Dopen2(f, d.name.c_str(), H5P_DEFAULT), path, d.name), H5Dclose);
          std::vector<hsize_t> offset(d.shape.size(), 0);
          for (std::int64_t c = 0; c < detail::chunk_count(d.shape); ++c) {
            offset[0] = static_cast<hsize_t>(c * detail::chunk_rows(d.shape));
            check(H5Dwrite_chunk(ds.get(), H5P_DEFAULT, 0, offset.data(), detail::chunk_stored_bytes(d.shape),
                                 hole.data()),
                  path, "allocate " + d.name);
          }
        }
        for (const auto& a : detail::chunk_addresses(path, f, datasets)) flat.insert(flat.end(), a.begin(), a.end());
        write_meta(f, path, meta);
      });
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  detail::share_error(error, 0, comm);
  std::size_t chunks = 0;
  for (const Dataset& d : datasets) chunks += static_cast<std::size_t>(detail::chunk_count(d.shape));
  flat.resize(chunks);
  broadcast_ints(comm, flat, 0);
  detail::ChunkAddresses addresses(datasets.size());
  for (std::size_t i = 0, at = 0; i < datasets.size(); ++i) {
    const auto n = static_cast<std::size_t>(detail::chunk_count(datasets[i].shape));
    addresses[i].assign(flat.begin() + static_cast<std::ptrdiff_t>(at),
                        flat.begin() + static_cast<std::ptrdiff_t>(at + n));
    at += n;
  }
  return addresses;
}

// Shards of whole rows are written as the flat ranges they are: their chunks need nothing
// from other ranks.
std::vector<Slice> flat_slices(const std::vector<Dataset>& datasets, const std::vector<Slice>& mine) {
  std::map<std::string, const Shape*> shape_of;
  for (const Dataset& d : datasets) shape_of.emplace(d.name, &d.shape);
  std::vector<Slice> flat;
  for (const Slice& s : mine) flat.push_back(shape_of.count(s.dataset) ? as_flat(*shape_of.at(s.dataset), s) : s);
  return flat;
}

// f(), its CheckpointError saying that nothing was committed.
template <class F>
void keeping_latest(F&& f) {
  try {
    f();
  } catch (const CheckpointError& e) {
    throw CheckpointError(fmt::format("{}; the previous checkpoint stays the latest", e.what()));
  }
}

}  // namespace

void write(const std::string& path, Communicator& comm, const Meta& meta, const std::vector<Dataset>& datasets,
           const std::vector<Slice>& mine) {
  quiet();
  keeping_latest([&] {
    const std::vector<Slice> flat = flat_slices(datasets, mine);
    const detail::WholeChunks plan(comm, datasets, flat);
    detail::write_whole_chunks(path, comm, datasets, flat, plan, skeleton(path, comm, meta, datasets));
  });
}

struct PendingWrite::State {
  std::string path;
  std::vector<Dataset> datasets;
  std::vector<std::vector<float>> copies;  // this rank's slices' data, as start_write found it
  std::vector<Tensor> snapshots;           // or, where they lie in one, the caller's copies
  std::vector<Slice> flat;
  std::optional<detail::WholeChunks> plan;
  detail::ChunkAddresses addresses;
  detail::OwnedChunks owned;
  std::atomic<bool> written{false};
  std::thread writer;
};

PendingWrite::PendingWrite() = default;
PendingWrite::PendingWrite(std::unique_ptr<State> s) : s_(std::move(s)) {}
PendingWrite::PendingWrite(PendingWrite&&) noexcept = default;
PendingWrite& PendingWrite::operator=(PendingWrite&& o) noexcept {
  // (a write still pending here would be dropped uncommitted: the trainer finishes it first)
  if (s_ && s_->writer.joinable()) s_->writer.join();
  s_ = std::move(o.s_);
  return *this;
}
PendingWrite::~PendingWrite() {
  if (s_ && s_->writer.joinable()) s_->writer.join();
}
bool PendingWrite::written() const { return !s_ || s_->written; }

void PendingWrite::finish(Communicator& comm) {
  MOE_CHECK(s_ != nullptr, CheckpointError, "no checkpoint write to finish");
  if (s_->writer.joinable()) s_->writer.join();
  const std::string error = s_->owned.error;
  s_.reset();  // (the copies go)
  keeping_latest([&] { detail::agree(error, comm); });
}

PendingWrite start_write(const std::string& path, Communicator& comm, const Meta& meta,
                         const std::vector<Dataset>& datasets, const std::vector<Slice>& mine,
                         std::vector<Tensor> snapshots, int hold_ms) {
  quiet();
  auto s = std::make_unique<PendingWrite::State>();
  s->path = path, s->datasets = datasets, s->snapshots = std::move(snapshots);
  const auto in_snapshot = [&](const Slice& x) {
    return std::any_of(s->snapshots.begin(), s->snapshots.end(), [&](const Tensor& t) {
      const auto* first = static_cast<const float*>(t.raw());
      return x.data >= first && x.data + (x.end - x.begin) <= first + t.numel();
    });
  };
  std::vector<Slice> copied = mine;
  s->copies.reserve(copied.size());
  for (Slice& x : copied) {  // a slice's elements are contiguous in its memory, window or not
    if (in_snapshot(x)) continue;
    s->copies.emplace_back(x.data, x.data + (x.end - x.begin));
    x.data = s->copies.back().data();
  }
  keeping_latest([&] {
    s->flat = flat_slices(datasets, copied);
    s->plan.emplace(comm, datasets, s->flat);
    s->addresses = skeleton(path, comm, meta, datasets);
    s->owned = detail::gather_chunks(path, comm, datasets, s->flat, *s->plan);
  });
  PendingWrite::State* st = s.get();
  const auto write = [st, me = comm.rank(), hold_ms] {
    std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
    detail::write_chunks(st->path, st->datasets, *st->plan, me, st->owned, st->addresses);  // catches its errors
    st->written = true;
  };
  try {
    st->writer = std::thread(write);
  } catch (const std::system_error&) {
    write();  // no thread to be had: written here (the other ranks reach finish's agreement all the same)
  }
  return PendingWrite(std::move(s));
}

void write_in_rounds(const std::string& path, Communicator& comm, const Meta& meta,
                     const std::vector<Dataset>& datasets, const std::vector<std::vector<std::size_t>>& rounds,
                     const std::function<std::vector<Slice>(std::size_t round)>& fill) {
  quiet();
  const detail::ChunkAddresses addresses = skeleton(path, comm, meta, datasets);
  for (std::size_t r = 0; r < rounds.size(); ++r) {
    std::vector<Dataset> some;
    detail::ChunkAddresses at;
    for (std::size_t i : rounds[r]) some.push_back(datasets[i]), at.push_back(addresses[i]);
    const std::vector<Slice> flat = flat_slices(some, fill(r));
    detail::write_whole_chunks(path, comm, some, flat, detail::WholeChunks(comm, some, flat), at);
  }
}

void read(const std::string& path, const std::vector<Dataset>& expected, const std::vector<Slice>& mine) {
  quiet();
  // Every rank on its own, through HDF5's default driver: HDF5 only says where the chunks
  // are and the reader's thread reads them meanwhile, so nothing is collective. A rank that
  // fails ends the job.
  detail::ChunkReader reader(path);
  {
    Id file = open_file(path);
    for_each_slice(file.get(), path, expected, mine, [&](hid_t ds, const Dataset& d, const Slice& s) {
      if (!chunks_of(ds, path, d, s, [&](detail::ChunkRead&& c) { reader.add(std::move(c)); }))
        read_through_hdf5(ds, path, d, s);
    });
  }  // HDF5 closes the file while the last chunks are read
  reader.finish();
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> read_extents(const std::string& path,
                                                                  const std::vector<Dataset>& expected,
                                                                  const std::vector<Slice>& mine) {
  quiet();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  Id file = open_file(path);
  for_each_slice(file.get(), path, expected, mine, [&](hid_t ds, const Dataset& d, const Slice& s) {
    chunks_of(ds, path, d, s, [&](detail::ChunkRead&& c) { out.emplace_back(c.addr, c.payload + 4); });
  });
  return out;
}

void Meta::missing(const std::string& name) const {
  throw CheckpointError(
      fmt::format("{}: attribute {} is missing or of another type; the file was not written by "
                  "moe train, or by an older build",
                  file.empty() ? "checkpoint" : file, name));
}

namespace {
// The root group's attribute names, in HDF5's name order.
std::vector<std::string> attribute_names(hid_t f, const std::string& path) {
  std::vector<std::string> names;
  const auto add = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
    static_cast<std::vector<std::string>*>(out)->push_back(name);
    return 0;
  };
  check(H5Aiterate2(f, H5_INDEX_NAME, H5_ITER_INC, nullptr, add, &names), path, "list attributes");
  return names;
}

Attribute read_attribute(hid_t f, const std::string& name, const std::string& path) {
  Id a(check_id(H5Aopen(f, name.c_str(), H5P_DEFAULT), path, "attribute " + name), H5Aclose);
  Id type(H5Aget_type(a.get()), H5Tclose);
  switch (H5Tget_class(type.get())) {
    case H5T_STRING: return read_text(f, name.c_str(), path);
    case H5T_FLOAT: return read_attr<double>(f, name.c_str(), H5T_NATIVE_DOUBLE, path);
    case H5T_INTEGER:
      if (H5Tget_sign(type.get()) == H5T_SGN_NONE)
        return read_attr<std::uint64_t>(f, name.c_str(), H5T_NATIVE_UINT64, path);
      return read_attr<std::int64_t>(f, name.c_str(), H5T_NATIVE_INT64, path);
    default:
      throw CheckpointError(
          fmt::format("{}: attribute {} is neither a number nor text; the file is damaged", path, name));
  }
}
}  // namespace

Meta read_meta(const std::string& path) {
  quiet();
  Id file = open_file(path);
  Meta m{.attrs = {}, .file = path};
  for (const std::string& name : attribute_names(file.get(), path))
    m.attrs[name] = read_attribute(file.get(), name, path);
  const std::int64_t version = m.get<std::int64_t>("format_version");
  MOE_CHECK(version == kFormatVersion, CheckpointError, "{}: format version {}, this build reads version {}", path,
            version, kFormatVersion);
  m.attrs.erase("format_version");
  return m;
}

namespace {
// Every link below `group` of the file (groups and datasets), as paths relative to the file.
std::vector<std::string> links_under(hid_t file, const std::string& group) {
  std::vector<std::string> names;
  H5Lvisit_by_name(
      file, group.c_str(), H5_INDEX_NAME, H5_ITER_INC,
      [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
        static_cast<std::vector<std::string>*>(out)->push_back(name);
        return 0;
      },
      &names, H5P_DEFAULT);
  if (group != "/")
    for (auto& n : names) n = group + "/" + n;
  return names;
}
}  // namespace

std::map<std::string, Tensor> read_group(const std::string& path, const std::string& group) {
  quiet();
  Id file = open_file(path);
  MOE_CHECK(H5Lexists(file.get(), group.c_str(), H5P_DEFAULT) > 0, CheckpointError, "{}: no group '{}'", path, group);
  std::map<std::string, Tensor> out;
  for (const std::string& n : links_under(file.get(), group)) {
    const hid_t id = H5Dopen2(file.get(), n.c_str(), H5P_DEFAULT);
    if (id < 0) {  // a group
      H5Eclear2(H5E_DEFAULT);
      continue;
    }
    Id ds(id, H5Dclose);
    Id space(H5Dget_space(ds.get()), H5Sclose);
    std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(0, H5Sget_simple_extent_ndims(space.get()))));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    Tensor t = Tensor::empty(Shape(dims.begin(), dims.end()), DType::f32);
    if (H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw()) < 0)
      throw damaged(path, n, fmt::format("cannot read ({})", hdf5_reason()));
    out.emplace(n.substr(group.size() + 1), std::move(t));
  }
  return out;
}

std::vector<std::string> dataset_names(const std::string& path) {
  quiet();
  Id file = open_file(path);
  // A link is a group where another link lies below it: no object header is opened (a V3
  // checkpoint holds ~10^5 datasets, and every rank lists them).
  const std::vector<std::string> links = links_under(file.get(), "/");
  const std::set<std::string> sorted(links.begin(), links.end());
  std::vector<std::string> out;
  for (const std::string& n : links) {
    const auto below = sorted.lower_bound(n + "/");
    if (below == sorted.end() || !below->starts_with(n + "/")) out.push_back(n);
  }
  return out;
}

std::vector<DatasetInfo> inspect(const std::string& path) {
  quiet();
  Id file = open_file(path);
  const std::vector<std::string> names = links_under(file.get(), "/");
  std::vector<DatasetInfo> out;
  for (const std::string& n : names) {
    const hid_t id = H5Dopen2(file.get(), n.c_str(), H5P_DEFAULT);
    if (id < 0) {  // a group
      H5Eclear2(H5E_DEFAULT);
      continue;
    }
    Id ds(id, H5Dclose);
    DatasetInfo info{n, {}, "", false, ""};
    Id space(H5Dget_space(ds.get()), H5Sclose);
    std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(0, H5Sget_simple_extent_ndims(space.get()))));
    H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
    info.shape.assign(dims.begin(), dims.end());
    Id type(H5Dget_type(ds.get()), H5Tclose);
    info.dtype = H5Tequal(type.get(), H5T_IEEE_F32LE) > 0 ? "f32" : "other";
    hssize_t n_el = H5Sget_simple_extent_npoints(space.get());
    std::vector<float> buf(static_cast<std::size_t>(std::max<hssize_t>(n_el, 1)));
    if (H5Dread(ds.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) >= 0) info.checksum_ok = true;
    else info.error = hdf5_reason();
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace moe::ckpt
