// CRC-32C against its published check value (RFC 3720, appendix B.4: "123456789" ->
// 0xE3069283) and TFRecord's masking of it (rotate right 15, add 0xa282ead8).
#include <catch2/catch.hpp>

#include <cstring>

#include "trainer/tensorboard.h"

using namespace moe;

TEST_CASE("tensorboard: CRC-32C check value and its TFRecord mask", "[trainer]") {
  const char* s = "123456789";
  CHECK(crc32c(s, std::strlen(s)) == 0xE3069283u);
  CHECK(crc32c("", 0) == 0u);
  const std::uint32_t c = 0xE3069283u;
  CHECK(masked_crc32c(s, std::strlen(s)) == ((c >> 15) | (c << 17)) + 0xa282ead8u);
}
