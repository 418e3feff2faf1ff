#include "data/jinja_chat.h"

#include <minja/minja.hpp>

#include <chrono>
#include <ctime>
#include <iomanip>
#include <sstream>

#include "kernels/error.h"

namespace moe::data {

// The template parsed as transformers compiles it (trim_blocks, lstrip_blocks), rendered with
// what apply_chat_template passes. (minja's chat_template class would also probe the template
// for tool-call support, rendering it several times and printing to stderr: not needed here.)
struct JinjaChat::Impl {
  std::shared_ptr<minja::TemplateNode> root;
  std::string bos, eos;
};

JinjaChat::JinjaChat(const std::string& source, const std::string& bos_token, const std::string& eos_token,
                     const std::string& origin)
    : impl_(std::make_unique<Impl>()) {
  try {
    impl_->root =
        minja::Parser::parse(source, {.trim_blocks = true, .lstrip_blocks = true, .keep_trailing_newline = false});
  } catch (const std::exception& e) {
    throw ConfigError(fmt::format("{}: the Jinja chat template does not parse: {}", origin, e.what()));
  }
  impl_->bos = bos_token, impl_->eos = eos_token;
}

JinjaChat::~JinjaChat() = default;

std::string JinjaChat::render(const std::vector<std::pair<std::string, std::string>>& messages,
                              bool generation_prompt) const {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const auto& [role, content] : messages) list.push_back({{"role", role}, {"content", content}});
  auto context =
      minja::Context::make(nlohmann::ordered_json({{"messages", list}, {"add_generation_prompt", generation_prompt}}));
  context->set("bos_token", impl_->bos);
  context->set("eos_token", impl_->eos);
  context->set("strftime_now",
               minja::Value::callable([](const std::shared_ptr<minja::Context>&, minja::ArgumentsValue& args) {
                 args.expectArgs("strftime_now", {1, 1}, {0, 0});
                 const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
                 std::tm local{};
                 localtime_r(&now, &local);
                 std::ostringstream out;
                 out << std::put_time(&local, args.args[0].get<std::string>().c_str());
                 return out.str();
               }));
  return impl_->root->render(context);
}

bool JinjaChat::available() { return true; }

}  // namespace moe::data
