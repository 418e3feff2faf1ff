// Chat (instruction) data for supervised fine-tuning: JSONL records rendered by a chat
// template into one text per conversation, with the byte spans the loss counts (docs/DATA.md).
// A record is {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
// or {"prompt": "...", "completion": "..."} (the two texts joined as they are; the completion
// counts, as TRL's prompt-completion format).
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "config/chat_template.h"

namespace moe::data {

// A rendered conversation: its text and the byte ranges [begin, end) of it whose tokens are
// targets; whether the end-of-document id that follows it is one.
struct ChatText {
  std::string text;
  std::vector<std::pair<std::size_t, std::size_t>> counted;
  bool counts_end = true;
};

struct ChatMessage {
  std::string role, content;
};

class JinjaChat;

// How conversations become text (data.chat_template): ours, each message's {role} and
// {content} filled in; or Jinja (data/jinja_chat.h), written in the key or `tokenizer`, the
// chat_template of the tokenizer_config.json beside the Hugging Face tokenizer.json given.
// Under Jinja an assistant message's counted span is what rendering the conversation up to it
// adds to the rendering before it with the generation prompt (its content and the template's
// closing of it, e.g. <|im_end|>); a template whose shorter conversations do not render as
// prefixes of longer ones cannot say that, and is refused (data.loss_on=all needs no spans).
class ChatRenderer {
 public:
  // ConfigError naming data.chat_template when a Jinja template does not parse or `tokenizer`
  // finds none.
  explicit ChatRenderer(const ChatTemplate& t, const std::string& tokenizer_json = "");
  ~ChatRenderer();
  // The conversation; with `generation_prompt`, followed by the opening of the assistant's
  // answer (ours: the template's text before {content}), where a model's answer starts.
  // Throws std::runtime_error (Jinja: the template's raise_exception, or no prefix).
  ChatText render(const std::vector<ChatMessage>& messages, bool generation_prompt = false) const;
  const std::string& source() const { return source_; }  // the template rendered by (meta.json)
  bool loss_on_all() const { return t_.loss_on_all; }

 private:
  ChatText render_jinja(const std::vector<ChatMessage>& messages, bool generation_prompt) const;
  ChatTemplate t_;
  std::string source_;
  std::shared_ptr<const JinjaChat> jinja_;
};

// Whether `path` is chat data: a .jsonl file, or a directory holding .jsonl files, whose first
// record has "messages" or "prompt" (a record of plain text is pre-training data, data/corpus.h).
bool is_chat_corpus(const std::string& path);

// Every record of a .jsonl file or of a directory's .jsonl files (name order). A line that is
// not a record (bad JSON, neither messages nor prompt/completion, a role or content of the
// wrong kind, an empty conversation) is a DataError naming file:line and what to fix.
std::vector<ChatText> read_chat_corpus(const std::string& path, const ChatRenderer& chat);

}  // namespace moe::data
