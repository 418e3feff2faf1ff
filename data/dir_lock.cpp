#include "data/dir_lock.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "kernels/error.h"

namespace moe {

DirLock::DirLock(const std::string& dir, const std::string& what) {
  std::filesystem::create_directories(dir);
  const std::string path = (std::filesystem::path(dir) / ".moe.lock").string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw ConfigError(fmt::format("{}: cannot open {}: {}", what, path, std::strerror(errno)));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    char holder[256] = {};
    const ssize_t n = ::pread(fd_, holder, sizeof holder - 1, 0);
    std::string who = n > 0 ? std::string(holder, std::size_t(n)) : "another process";
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    ::close(fd_);
    throw ConfigError(
        fmt::format("{} {} is in use by {}; wait for it to end or choose another directory", what, dir, who));
  }
  char host[128] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string me =
      fmt::format("host {} pid {} since {:%Y-%m-%d %H:%M:%S}\n", host, ::getpid(), fmt::localtime(std::time(nullptr)));
  // (Without the note the lock still holds; only a second writer's message is poorer.)
  [[maybe_unused]] const bool noted = ::ftruncate(fd_, 0) == 0 && ::pwrite(fd_, me.data(), me.size(), 0) > 0;
}

DirLock::~DirLock() {
  if (fd_ >= 0) ::close(fd_);  // (closing releases the flock)
}

}  // namespace moe
