#include "checkpoint/store.h"

#include <fcntl.h>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <vector>

#include "kernels/error.h"

namespace fs = std::filesystem;

namespace moe::ckpt {
namespace {

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw CheckpointError(fmt::format("{}: cannot open to sync: {}", path, std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw CheckpointError(fmt::format("{}: fsync failed: {}", path, std::strerror(err)));
}

void rename_synced(const std::string& from, const std::string& to, const std::string& dir) {
  fsync_path(from);
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) throw CheckpointError(fmt::format("{}: cannot rename to {}: {}", from, to, ec.message()));
  fsync_path(dir);
}

}  // namespace

std::string step_file(const std::string& dir, std::int64_t step) {
  return (fs::path(dir) / fmt::format("step_{:08d}.h5", step)).string();
}

std::string temp_file(const std::string& final_path) { return final_path + ".tmp"; }

void commit(const std::string& dir, const std::string& final_path, std::int64_t keep) {
  rename_synced(temp_file(final_path), final_path, dir);
  const std::string pointer = (fs::path(dir) / "latest").string();
  {
    std::ofstream out(temp_file(pointer), std::ios::trunc);
    out << fs::path(final_path).filename().string() << "\n";
    out.flush();
    if (!out) throw CheckpointError(fmt::format("{}: cannot write the latest pointer", temp_file(pointer)));
  }
  rename_synced(temp_file(pointer), pointer, dir);
  // Prune to the `keep` most recently written step files; the one just committed always
  // stays (a fresh run in an old directory must not lose its checkpoint to older, higher steps).
  std::vector<std::pair<fs::file_time_type, fs::path>> steps;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    static const std::regex ours(R"(step_\d{8}\.h5)");  // our step files only (step_file's names)
    if (std::regex_match(n, ours) && !fs::equivalent(e.path(), final_path))
      steps.emplace_back(fs::last_write_time(e.path()), e.path());
  }
  std::sort(steps.begin(), steps.end(), std::greater<>());  // newest first
  for (std::size_t i = static_cast<std::size_t>(std::max<std::int64_t>(keep - 1, 0)); i < steps.size(); ++i)
    fs::remove(steps[i].second);
}

std::optional<std::string> latest(const std::string& dir) {
  const fs::path pointer = fs::path(dir) / "latest";
  if (!fs::exists(pointer)) return std::nullopt;
  std::ifstream in(pointer);
  std::string name;
  std::getline(in, name);
  const fs::path target = fs::path(dir) / name;
  MOE_CHECK(
      !name.empty() && fs::is_regular_file(target), CheckpointError,
      "{}: points to '{}', which does not exist; remove the pointer to start fresh or point it at a step_*.h5 file",
      pointer.string(), target.string());
  return target.string();
}

void remove_stale_temps(const std::string& dir) {
  if (!fs::is_directory(dir)) return;
  static const std::regex ours(R"((step_\d{8}\.h5|latest)\.tmp)");
  for (const auto& e : fs::directory_iterator(dir))
    if (std::regex_match(e.path().filename().string(), ours)) fs::remove(e.path());
}

}  // namespace moe::ckpt
