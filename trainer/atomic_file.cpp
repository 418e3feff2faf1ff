#include "trainer/atomic_file.h"

#include <filesystem>
#include <fstream>

#include "kernels/error.h"

namespace moe {

void write_atomically(const std::string& path, const std::string& header, const std::vector<const Tensor*>& data) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const Tensor* t : data)
      out.write(static_cast<const char*>(t->raw()), static_cast<std::streamsize>(t->nbytes()));
    out.flush();
    MOE_CHECK(out.good(), CheckpointError, "{}: cannot write (disk full?)", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace moe
