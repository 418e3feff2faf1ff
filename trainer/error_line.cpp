#include "trainer/error_line.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace moe {

int job_rank() {
  for (const char* var : {"PMIX_RANK", "OMPI_COMM_WORLD_RANK"})
    if (const char* v = std::getenv(var); v && *v) return std::atoi(v);
  return 0;
}

namespace {

void write_line(const std::string& line) {
  for (std::size_t done = 0; done < line.size();) {
    const ssize_t n = write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += std::size_t(n);
  }
}

// Whether this process is the first of its job (on this node) to claim the error line.
bool claim() {
  const char* job = std::getenv("PMIX_NAMESPACE");
  if (!job || !*job) return true;  // not under mpirun: the only process
  const int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string name = std::string("moe-error-") + job;  // abstract: sun_path[0] = '\0'
  const std::size_t n = std::min(name.size(), sizeof(addr.sun_path) - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), socklen_t(offsetof(sockaddr_un, sun_path) + 1 + n)) == 0)
    return true;  // (fd stays open: the claim lasts as long as this process)
  close(fd);
  return false;
}
}  // namespace

void print_error(const std::string& what) {
  if (job_rank() == 0) return write_line("moe: error: " + what + "\n");
  // mpirun ends the whole job when the first process exits non-zero: were it this one,
  // rank 0 could be killed before its line is out. So wait for that (rank 0 failing alike).
  std::this_thread::sleep_for(std::chrono::seconds(2));
}

bool print_rank_error(int rank, const std::string& what) {
  if (rank != 0) std::this_thread::sleep_for(std::chrono::seconds(2));
  if (!claim()) return false;
  write_line("moe: error on rank " + std::to_string(rank) + ": " + what + "\n");
  return true;
}

}  // namespace moe
