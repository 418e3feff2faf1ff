// One writer per directory: moe data prepare's data.dir, a run's checkpoint.dir.
#pragma once
#include <string>

namespace moe {

// An advisory lock on a directory moe writes (a run's checkpoint.dir, a data.dir): flock on
// DIR/.moe.lock, which names the holder (host, pid, start time). A second writer fails at
// once with ConfigError naming the holder; the kernel drops the lock when its holder's
// process ends, so a dead run's lock is never in the way. Held for the object's lifetime.
class DirLock {
 public:
  // `what` names the user of the directory in the error ("checkpoint.dir", "data.dir").
  DirLock(const std::string& dir, const std::string& what);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace moe
