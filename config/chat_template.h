// How chat records render for supervised fine-tuning (data/chat.h applies it; keys
// data.chat_template and data.loss_on in config/config.cpp).
#pragma once
#include <string>

namespace moe::data {

struct ChatTemplate {
  // One message: {role} and {content} replaced (data.chat_template; or a Jinja template, or
  // "tokenizer": data/chat.h ChatRenderer). The header ends with a
  // newline so that a generation prompt (the text up to {content}) encodes as a prefix of the
  // trained conversation: pieces rarely cross a newline (ours never: it is a byte piece).
  std::string message = "{role}:\n{content}\n";
  // Targets (data.loss_on): the assistant's messages, from {content} to the message's end, and
  // the end-of-document after a closing assistant message; or every token.
  bool loss_on_all = false;
};

// Document masking of packed sequences (data.document_mask; data/loader.h): on, off, or on
// for chat data only (auto).
enum class DocumentMask { automatic, on, off };
inline bool document_masking(DocumentMask m, bool chat) {
  return m == DocumentMask::on || (m == DocumentMask::automatic && chat);
}

// Whether a data.chat_template value is Jinja (data/jinja_chat.h) rather than ours.
inline bool is_jinja(const std::string& t) {
  return t.find("{%") != std::string::npos || t.find("{{") != std::string::npos;
}

// Whether `message` holds {role} and then {content}, once each (what rendering needs).
inline bool valid_chat_template(const std::string& m) {
  const auto role = m.find("{role}"), content = m.find("{content}");
  return role != std::string::npos && content != std::string::npos && role < content &&
         m.find("{role}", role + 1) == std::string::npos && m.find("{content}", content + 1) == std::string::npos;
}

}  // namespace moe::data
