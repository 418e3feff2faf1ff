// The unit tests' main: each run works in a fresh scratch directory (tests write corpora,
// shards and checkpoints under relative names), so running the binary from a source tree
// leaves nothing behind and ctest's parallel runs never share a file. Sources are read
// through MOE_SOURCE_DIR, an absolute path.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::string tmpl = (fs::temp_directory_path() / "moe_unit_XXXXXX").string();
  if (!mkdtemp(tmpl.data())) {
    std::perror("moe_unit_tests: mkdtemp");
    return 2;
  }
  const fs::path home = fs::current_path();
  fs::current_path(tmpl);
  const int rc = Catch::Session().run(argc, argv);
  fs::current_path(home);
  std::error_code ignored;
  fs::remove_all(tmpl, ignored);
  return rc;
}
