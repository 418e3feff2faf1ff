// Jinja chat templates (a Hugging Face tokenizer_config.json's "chat_template"), rendered by
// minja (google/minja: a header-only Jinja subset written for chat templates, deps/minja) as
// transformers' apply_chat_template renders them: trim_blocks and lstrip_blocks, messages,
// add_generation_prompt, bos_token and eos_token, raise_exception, strftime_now. A build
// without deps/minja refuses Jinja templates with a ConfigError saying how to get it.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/chat_template.h"  // is_jinja

namespace moe::data {

class JinjaChat {
 public:
  // ConfigError naming `origin` when the template does not parse.
  JinjaChat(const std::string& source, const std::string& bos_token, const std::string& eos_token,
            const std::string& origin);
  ~JinjaChat();
  JinjaChat(const JinjaChat&) = delete;
  JinjaChat& operator=(const JinjaChat&) = delete;
  // (role, content) messages as text; with generation_prompt, the template's opening of the
  // assistant's answer after them. Throws std::runtime_error with the template's own message
  // (raise_exception) or minja's when rendering fails.
  std::string render(const std::vector<std::pair<std::string, std::string>>& messages, bool generation_prompt) const;
  static bool available();  // whether this build has minja

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace moe::data
