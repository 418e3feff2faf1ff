#include "checkpoint/holes_driver.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <limits>

#include "kernels/error.h"

namespace moe::ckpt::detail {
namespace {

struct Config {
  const char* hole;
  std::size_t bytes;
};

struct File {
  H5FD_t pub;  // first: HDF5 sees this part
  int fd = -1;
  Config config{};
  haddr_t eoa = 0;
  haddr_t eof = 0;   // the end HDF5 believes written (holes included)
  haddr_t disk = 0;  // the file's size on disk
};

File* file_of(H5FD_t* f) { return reinterpret_cast<File*>(f); }
const File* file_of(const H5FD_t* f) { return reinterpret_cast<const File*>(f); }

// The reason a call failed, where HDF5's error stack shows it (checkpoint.cpp reports the
// innermost message).
herr_t fail(const char* what) {
  const int err = errno;
  H5Epush2(H5E_DEFAULT, __FILE__, what, __LINE__, H5E_ERR_CLS, H5E_VFL, H5E_WRITEERROR, "%s: %s", what,
           std::strerror(err));
  return -1;
}

H5FD_t* open_file(const char* name, unsigned flags, hid_t fapl, haddr_t) {
  int mode = O_RDWR;
  if (flags & H5F_ACC_CREAT) mode |= O_CREAT;
  if (flags & H5F_ACC_TRUNC) mode |= O_TRUNC;
  if (flags & H5F_ACC_EXCL) mode |= O_EXCL;
  const int fd = ::open(name, mode, 0666);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) {
    fail("open");
    if (fd >= 0) ::close(fd);
    return nullptr;
  }
  auto* f = new File{};
  f->fd = fd;
  f->config = *static_cast<const Config*>(H5Pget_driver_info(fapl));
  f->eof = f->disk = static_cast<haddr_t>(st.st_size);
  return &f->pub;
}

herr_t close_file(H5FD_t* h) {
  File* f = file_of(h);
  const int rc = ::close(f->fd);
  delete f;
  return rc == 0 ? 0 : fail("close");
}

herr_t query(const H5FD_t*, unsigned long* flags) {  // what the default driver declares
  *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
           H5FD_FEAT_AGGREGATE_SMALLDATA;
  return 0;
}

haddr_t get_eoa(const H5FD_t* f, H5FD_mem_t) { return file_of(f)->eoa; }
// The file grows with its address space as HDF5 allocates (sparse: holes take no disk), so
// a file-size limit fails the allocation that crosses it, while HDF5 can still report it;
// a failure when closing leaves HDF5 1.10 unable to clean up at exit.
herr_t set_eoa(H5FD_t* h, H5FD_mem_t, haddr_t addr) {
  File* f = file_of(h);
  if (addr > f->disk) {
    if (::ftruncate(f->fd, static_cast<off_t>(addr)) != 0) return fail("extend");
    f->disk = addr;
  }
  f->eoa = addr;
  return 0;
}
haddr_t get_eof(const H5FD_t* f, H5FD_mem_t) { return file_of(f)->eof; }

herr_t read(H5FD_t* h, H5FD_mem_t, hid_t, haddr_t addr, std::size_t size, void* buf) {
  auto* out = static_cast<char*>(buf);
  while (size > 0) {
    const ssize_t n = ::pread(file_of(h)->fd, out, size, static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("read");
    if (n == 0) {  // past the end: zeros, as the default driver reads them
      std::memset(out, 0, size);
      break;
    }
    out += n, addr += static_cast<haddr_t>(n), size -= static_cast<std::size_t>(n);
  }
  return 0;
}

herr_t write(H5FD_t* h, H5FD_mem_t, hid_t, haddr_t addr, std::size_t size, const void* buf) {
  File* f = file_of(h);
  const auto* in = static_cast<const char*>(buf);
  f->eof = std::max(f->eof, addr + size);
  if (in >= f->config.hole && in + size <= f->config.hole + f->config.bytes) return 0;  // a hole
  while (size > 0) {
    const ssize_t n = ::pwrite(f->fd, in, size, static_cast<off_t>(addr));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return fail("write");
    }
    in += n, addr += static_cast<haddr_t>(n), size -= static_cast<std::size_t>(n);
    f->disk = std::max(f->disk, addr);
  }
  return 0;
}

// HDF5 calls this when it flushes and closes: the file gets the size of its address space
// (a file shorter than that is a truncated file to HDF5).
herr_t truncate(H5FD_t* h, hid_t, hbool_t) {
  File* f = file_of(h);
  if (f->disk == f->eoa) return 0;
  if (::ftruncate(f->fd, static_cast<off_t>(f->eoa)) != 0) return fail("truncate");
  f->disk = f->eof = f->eoa;
  return 0;
}

void* fapl_get(H5FD_t* h) { return new Config(file_of(h)->config); }
void* fapl_copy(const void* c) { return new Config(*static_cast<const Config*>(c)); }
herr_t fapl_free(void* c) {
  delete static_cast<Config*>(c);
  return 0;
}

H5FD_class_t make_class() {
  H5FD_class_t c{};
  c.name = "moe_holes";
  c.maxaddr = static_cast<haddr_t>(std::numeric_limits<off_t>::max());
  c.fc_degree = H5F_CLOSE_WEAK;
  c.fapl_size = sizeof(Config);
  c.fapl_get = fapl_get;
  c.fapl_copy = fapl_copy;
  c.fapl_free = fapl_free;
  c.open = open_file;
  c.close = close_file;
  c.query = query;
  c.get_eoa = get_eoa;
  c.set_eoa = set_eoa;
  c.get_eof = get_eof;
  c.read = read;
  c.write = write;
  c.truncate = truncate;
  const H5FD_mem_t map[] = H5FD_FLMAP_DICHOTOMY;
  std::copy(std::begin(map), std::end(map), c.fl_map);
  return c;
}

}  // namespace

hid_t holes_fapl(const void* hole, std::size_t bytes) {
  static const H5FD_class_t cls = make_class();
  static const hid_t driver = H5FDregister(&cls);
  MOE_CHECK(driver >= 0, CheckpointError, "HDF5 refused the checkpoint file driver (H5FDregister)");
  const hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  const Config config{static_cast<const char*>(hole), bytes};
  if (fapl < 0 || H5Pset_driver(fapl, driver, &config) < 0) {
    if (fapl >= 0) H5Pclose(fapl);
    throw CheckpointError("HDF5 refused the checkpoint file driver (H5Pset_driver)");
  }
  return fapl;
}

}  // namespace moe::ckpt::detail
