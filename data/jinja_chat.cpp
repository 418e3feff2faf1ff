#include "data/jinja_chat.h"

#include <minja/minja.hpp>

#include <chrono>
#include <ctime>
#include <iomanip>
#include <sstream>

#include "kernels/error.h"

namespace moe::data {
namespace {
// minja's messages carry the template's location at every level, over several lines: the
// first line says what went wrong.
std::string first_line(const char* what) {
  const std::string s(what);
  return s.substr(0, s.find('\n'));
}
}  // namespace

// The template parsed as transformers compiles it (trim_blocks, lstrip_blocks), rendered with
// what apply_chat_template passes. (minja's chat_template class would also probe the template
// for tool-call support, rendering it several times and printing to stderr: not needed here.)
struct JinjaChat::Impl {
  std::shared_ptr<minja::TemplateNode> root;
  nlohmann::ordered_json tokens;
  std::tm now{};
};

JinjaChat::JinjaChat(const std::string& source, const nlohmann::json& tokens, const std::string& origin)
    : impl_(std::make_unique<Impl>()) {
  try {
    impl_->root =
        minja::Parser::parse(source, {.trim_blocks = true, .lstrip_blocks = true, .keep_trailing_newline = false});
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format("{}: the Jinja chat template does not parse: {}", origin, first_line(e.what())));
  }
  impl_->tokens = nlohmann::ordered_json::parse(tokens.dump());
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  localtime_r(&t, &impl_->now);
}

JinjaChat::~JinjaChat() = default;

std::string JinjaChat::render(const std::vector<std::pair<std::string, std::string>>& messages,
                              bool generation_prompt) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& [role, content] : messages) list.push_back({{"role", role}, {"content", content}});
  nlohmann::ordered_json values = impl_->tokens;
  values["messages"] = list, values["add_generation_prompt"] = generation_prompt;
  values["tools"] = nullptr, values["documents"] = nullptr;
  auto context = minja::Context::make(std::move(values));
  const std::tm now = impl_->now;
  context->set("strftime_now",
               minja::Value::callable([now](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
                 args.expectArgs("strftime_now", {1, 1}, {0, 0});
                 std::ostringstream out;
                 out << std::put_time(&now, args.args[0].get<std::string>().c_str());
                 return out.str();
               }));
  try {
    return impl_->root->render(context);
  } catch (const std::exception& e) {
    throw std::runtime_error(first_line(e.what()));
  }
}

bool JinjaChat::available() { return true; }

}  // namespace moe::data
