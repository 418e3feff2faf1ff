// A moe built without Apache Arrow (deps/arrow absent at configure time): Parquet corpora are
// refused with what to do.
#include "data/readers.h"
#include "kernels/error.h"

namespace moe::data {

bool parquet_supported() { return false; }

void parquet_documents(const std::filesystem::path& file, const std::string&, const DocumentSink&, BadInput&) {
  throw DataError(fmt::format(
      "{}: this moe was built without Parquet support; run scripts/install-deps.sh (it unpacks Arrow's libraries "
      "into deps/arrow) and scripts/build.sh",
      file.string()));
}

}  // namespace moe::data
