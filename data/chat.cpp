#include "data/chat.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "data/corpus.h"
#include "kernels/error.h"

namespace moe::data {
namespace fs = std::filesystem;
namespace {
constexpr std::string_view kRole = "{role}", kContent = "{content}";

std::string replace_role(std::string_view text, const std::string& role) {
  std::string out(text);
  if (const auto at = out.find(kRole); at != std::string::npos) out.replace(at, kRole.size(), role);
  return out;
}

// One JSONL record as messages; throws a plain message (the caller adds file:line).
std::vector<ChatMessage> parse_record(const nlohmann::json& r, bool& prompt_completion) {
  if (!r.is_object()) throw std::runtime_error("a record must be a JSON object");
  const auto text_of = [](const nlohmann::json& o, const char* key) {
    const auto it = o.find(key);
    if (it == o.end() || !it->is_string()) throw std::runtime_error(fmt::format("\"{}\" must be a string", key));
    return it->get<std::string>();
  };
  if (r.contains("prompt") || r.contains("completion")) {
    prompt_completion = true;
    return {{"user", text_of(r, "prompt")}, {"assistant", text_of(r, "completion")}};
  }
  const auto it = r.find("messages");
  if (it == r.end() || !it->is_array() || it->empty())
    throw std::runtime_error("expected \"messages\" (a non-empty array) or \"prompt\" and \"completion\"");
  std::vector<ChatMessage> out;
  for (const auto& m : *it) {
    if (!m.is_object()) throw std::runtime_error("each message must be an object with \"role\" and \"content\"");
    ChatMessage msg{text_of(m, "role"), text_of(m, "content")};
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant")
      throw std::runtime_error(fmt::format("role \"{}\": expected system, user or assistant", msg.role));
    out.push_back(std::move(msg));
  }
  return out;
}

// prompt + completion as they are: the completion counts, then the end-of-document.
ChatText join_prompt_completion(const std::vector<ChatMessage>& m, const ChatTemplate& t) {
  ChatText out{m[0].content + m[1].content, {}, true};
  out.counted.emplace_back(t.loss_on_all ? 0 : m[0].content.size(), out.text.size());
  return out;
}

void read_file(const fs::path& file, const ChatTemplate& t, std::vector<ChatText>& out) {
  std::ifstream in(file, std::ios::binary);
  MOE_CHECK(in, DataError, "{}: cannot read", file.string());
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines between records
    try {
      bool pc = false;
      const auto messages = parse_record(nlohmann::json::parse(line), pc);
      out.push_back(pc ? join_prompt_completion(messages, t) : render_chat(messages, t));
    } catch (const std::exception& e) {  // nlohmann's parse errors and ours, one line naming the record
      throw DataError(fmt::format("{}:{}: {}; fix or remove the record", file.string(), n, e.what()));
    }
  }
}

// The corpus's .jsonl files (data/corpus.h's listing).
std::vector<fs::path> jsonl_files(const std::string& path) {
  std::vector<fs::path> files;
  for (const auto& f : corpus_files(path))
    if (fs::path(f).extension() == ".jsonl") files.emplace_back(f);
  return files;
}
}  // namespace

ChatText render_chat(const std::vector<ChatMessage>& messages, const ChatTemplate& t, bool generation_prompt) {
  const std::size_t at = t.message.find(kContent);
  const std::string_view head = std::string_view(t.message).substr(0, at),
                         tail = std::string_view(t.message).substr(at + kContent.size());
  ChatText out;
  for (const auto& m : messages) {
    out.text += replace_role(head, m.role);
    const std::size_t begin = out.text.size();
    out.text += m.content;
    out.text += replace_role(tail, m.role);
    if (m.role == "assistant" && !t.loss_on_all) out.counted.emplace_back(begin, out.text.size());
  }
  if (t.loss_on_all) out.counted.emplace_back(0, out.text.size());
  out.counts_end = t.loss_on_all || (!messages.empty() && messages.back().role == "assistant");
  if (generation_prompt) out.text += replace_role(head, "assistant");
  return out;
}

bool is_chat_corpus(const std::string& path) {
  const auto files = jsonl_files(path);
  if (files.empty()) return false;
  std::ifstream in(files.front(), std::ios::binary);
  std::string line;
  while (std::getline(in, line) && line.find_first_not_of(" \t\r") == std::string::npos) {}
  // A record of text (data.text_field) is pre-training text; a malformed first line is left
  // to the chat reader, which names it.
  const auto first = nlohmann::json::parse(line, nullptr, false);
  return !first.is_object() || first.contains("messages") || first.contains("prompt") || first.contains("completion");
}

std::vector<ChatText> read_chat_corpus(const std::string& path, const ChatTemplate& t) {
  MOE_CHECK(valid_chat_template(t.message), ConfigError,
            "data.chat_template \"{}\": must hold {{role}} and then {{content}}, once each", t.message);
  std::vector<ChatText> out;
  for (const auto& f : jsonl_files(path)) read_file(f, t, out);
  MOE_CHECK(!out.empty(), DataError, "{}: no chat records found (JSONL: one record a line)", path);
  return out;
}

}  // namespace moe::data
