// Chat (instruction) data for supervised fine-tuning: JSONL records rendered by a chat
// template into one text per conversation, with the byte spans the loss counts (docs/DATA.md).
// A record is {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
// or {"prompt": "...", "completion": "..."} (the two texts joined as they are; the completion
// counts, as TRL's prompt-completion format).
#pragma once
#include <cstddef>
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

// The conversation rendered by `t`; with `generation_prompt`, followed by the assistant's
// header (the template's text before {content}), where a model's answer starts.
ChatText render_chat(const std::vector<ChatMessage>& messages, const ChatTemplate& t, bool generation_prompt = false);

// Whether `path` is chat data: a .jsonl file, or a directory holding .jsonl files, whose first
// record has "messages" or "prompt" (a record of plain text is pre-training data, data/corpus.h).
bool is_chat_corpus(const std::string& path);

// Every record of a .jsonl file or of a directory's .jsonl files (name order). A line that is
// not a record (bad JSON, neither messages nor prompt/completion, a role or content of the
// wrong kind, an empty conversation) is a DataError naming file:line and what to fix.
std::vector<ChatText> read_chat_corpus(const std::string& path, const ChatTemplate& t);

}  // namespace moe::data
