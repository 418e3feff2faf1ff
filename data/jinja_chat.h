// Jinja chat templates (a Hugging Face tokenizer_config.json's "chat_template"), rendered by
// minja (google/minja: a header-only Jinja subset written for chat templates, deps/minja) as
// transformers' apply_chat_template renders them: trim_blocks and lstrip_blocks, messages,
// add_generation_prompt, the special tokens, tools and documents (none), raise_exception,
// strftime_now. One known difference: minja's trim/strip drop ASCII whitespace only, Python's
// every Unicode space (a message edged with U+3000 or U+00A0 renders otherwise). A build
// without deps/minja refuses Jinja templates with a ConfigError saying how to get it.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "config/chat_template.h"  // is_jinja

namespace moe::data {

class JinjaChat {
 public:
  // `tokens`: the tokenizer's special tokens by name (bos_token, eos_token, pad_token, ...,
  // additional_special_tokens), as transformers passes them. strftime_now reads the clock
  // once, here, so that every rendering agrees. ConfigError naming `origin` when the template
  // does not parse.
  JinjaChat(const std::string& source, const nlohmann::json& tokens, const std::string& origin);
  ~JinjaChat();
  JinjaChat(const JinjaChat&) = delete;
  JinjaChat& operator=(const JinjaChat&) = delete;
  // (role, content) messages as text; with generation_prompt, the template's opening of the
  // assistant's answer after them. Throws std::runtime_error with the first line of the
  // template's own message (raise_exception) or minja's when rendering fails.
  std::string render(const std::vector<std::pair<std::string, std::string>>& messages, bool generation_prompt) const;
  static bool available();  // whether this build has minja

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::data
