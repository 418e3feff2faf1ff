// The run's checkpoint directory: step_<N>.h5 files, a `latest` pointer, and the rule that a
// checkpoint becomes visible only once complete. A save writes step_<N>.h5.tmp; commit()
// fsyncs it, renames it into place, fsyncs the directory, then replaces `latest` the same way
// (write, fsync, rename), and finally prunes to the `keep` most recently written (the new one
// always among them). A crash at any point
// leaves the previous checkpoint and pointer intact.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace moe::ckpt {

std::string step_file(const std::string& dir, std::int64_t step);  // dir/step_00000042.h5
std::string temp_file(const std::string& final_path);              // final_path + ".tmp"

// One process (rank 0), after the collective write of temp_file(final_path) closed.
void commit(const std::string& dir, const std::string& final_path, std::int64_t keep);

// The checkpoint `latest` names, if the directory has a pointer. CheckpointError when the
// pointer names a file that does not exist.
std::optional<std::string> latest(const std::string& dir);

// Removes the temporary files a save that did not finish leaves (step_*.h5.tmp, latest.tmp);
// nothing else in the directory is touched.
void remove_stale_temps(const std::string& dir);

}  // namespace moe::ckpt
