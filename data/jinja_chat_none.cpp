// A build without deps/minja: Jinja chat templates are refused (data/jinja_chat.h).
#include "data/jinja_chat.h"

#include "kernels/error.h"

namespace moe::data {

struct JinjaChat::Impl {};

JinjaChat::JinjaChat(const std::string&, const nlohmann::json&, const std::string& origin) {
  throw ConfigError(fmt::format(
      "{}: a Jinja chat template needs minja, which this build lacks: run scripts/install-deps.sh and rebuild",
      origin));
}

JinjaChat::~JinjaChat() = default;

std::string JinjaChat::render(const std::vector<std::pair<std::string, std::string>>&, bool) const { return {}; }

bool JinjaChat::available() { return false; }

}  // namespace moe::data
