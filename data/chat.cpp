#include "data/chat.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <iterator>
#include <filesystem>
#include <fstream>

#include "data/corpus.h"
#include "data/jinja_chat.h"
#include "data/tokenizer.h"
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
ChatText join_prompt_completion(const std::vector<ChatMessage>& m, bool loss_on_all) {
  ChatText out{m[0].content + m[1].content, {}, true};
  out.counted.emplace_back(loss_on_all ? 0 : m[0].content.size(), out.text.size());
  return out;
}

void read_file(const fs::path& file, const ChatRenderer& chat, bool loss_on_all, std::vector<ChatText>& out) {
  std::ifstream in(file, std::ios::binary);
  MOE_CHECK(in, DataError, "{}: cannot read", file.string());
  std::string line;
  for (std::int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank lines between records
    try {
      bool pc = false;
      const auto messages = parse_record(nlohmann::json::parse(line), pc);
      out.push_back(pc ? join_prompt_completion(messages, loss_on_all) : chat.render(messages));
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

ChatText render_ours(const std::vector<ChatMessage>& messages, const ChatTemplate& t, bool generation_prompt) {
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

// The special tokens transformers hands a template (its special_tokens_map): every
// tokenizer_config.json key ending in _token, and additional_special_tokens.
nlohmann::json special_tokens(const nlohmann::json& config) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [key, value] : config.items())
    if (key.ends_with("_token")) out[key] = special_token(config, key.c_str());
  if (const auto it = config.find("additional_special_tokens"); it != config.end() && it->is_array()) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& t : *it) list.push_back(t.is_string() ? t.get<std::string>() : t.value("content", std::string()));
    out["additional_special_tokens"] = list;
  }
  return out;
}

// A model's chat template: tokenizer_config.json's chat_template (a string, or named templates:
// "default"), else the chat_template.jinja beside it (what transformers' save_pretrained writes).
std::string tokenizer_template(const std::string& tokenizer_json, const nlohmann::json& config) {
  const std::string origin = "data.chat_template = tokenizer";
  if (const auto it = config.find("chat_template"); it != config.end()) {
    if (it->is_string()) return it->get<std::string>();
    if (it->is_array())
      for (const auto& named : *it)
        if (named.value("name", std::string()) == "default" && named.contains("template"))
          return named.at("template").get<std::string>();
    throw ConfigError(
        fmt::format("{}: {}'s tokenizer_config.json has a chat_template that is neither a string nor "
                    "named templates with a \"default\"; write one in the key",
                    origin, tokenizer_json));
  }
  const fs::path jinja = fs::path(tokenizer_json).parent_path() / "chat_template.jinja";
  std::ifstream in(jinja, std::ios::binary);
  MOE_CHECK(in, ConfigError,
            "{}: {} has no chat_template in its tokenizer_config.json and no chat_template.jinja beside it; write "
            "one in the key",
            origin, tokenizer_json);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The longest common prefix of a and b.
std::size_t common_prefix(const std::string& a, const std::string& b) {
  return std::size_t(
      std::mismatch(a.begin(), a.begin() + std::ptrdiff_t(std::min(a.size(), b.size())), b.begin()).first - a.begin());
}
}  // namespace

ChatRenderer::ChatRenderer(const ChatTemplate& t, const std::string& tokenizer_json) : t_(t), source_(t.message) {
  if (t.message != "tokenizer" && !is_jinja(t.message)) {
    MOE_CHECK(valid_chat_template(t.message), ConfigError,
              "data.chat_template \"{}\": must hold {{role}} and then {{content}}, once each (or be a Jinja template, "
              "or tokenizer)",
              t.message);
    return;
  }
  const bool hf = Tokenizer::is_hf(tokenizer_json);
  MOE_CHECK(hf || t.message != "tokenizer", ConfigError,
            "data.chat_template = tokenizer: takes the chat_template of a Hugging Face tokenizer's "
            "tokenizer_config.json, but data.tokenizer names none ('{}'); set data.tokenizer to a model's "
            "tokenizer.json, or write the template in the key",
            tokenizer_json);
  const nlohmann::json config = hf ? tokenizer_config(tokenizer_json) : nlohmann::json::object();
  if (t.message == "tokenizer") source_ = tokenizer_template(tokenizer_json, config);
  jinja_ = std::make_shared<const JinjaChat>(
      source_, special_tokens(config),
      t.message == "tokenizer" ? "data.chat_template (tokenizer: " + tokenizer_json + ")" : "data.chat_template");
}

ChatRenderer::~ChatRenderer() = default;

ChatText ChatRenderer::render(const std::vector<ChatMessage>& messages, bool generation_prompt) const {
  return jinja_ ? render_jinja(messages, generation_prompt) : render_ours(messages, t_, generation_prompt);
}

// An answer's span: from the end of the conversation before it rendered with the generation
// prompt to where the conversation up to it stops agreeing with the whole (a template may
// close the last turn otherwise when no prompt follows, Phi-3's eos). A prompt has no spans.
ChatText ChatRenderer::render_jinja(const std::vector<ChatMessage>& messages, bool generation_prompt) const {
  std::vector<std::pair<std::string, std::string>> m;
  for (const auto& x : messages) m.emplace_back(x.role, x.content);
  ChatText out{jinja_->render(m, generation_prompt), {}, true};
  out.counts_end = t_.loss_on_all || (!messages.empty() && messages.back().role == "assistant");
  if (generation_prompt) return out;
  if (t_.loss_on_all) {
    out.counted.emplace_back(0, out.text.size());
    return out;
  }
  for (std::size_t k = 0; k < m.size(); ++k) {
    if (m[k].first != "assistant") continue;
    std::string before;  // (an opening answer: nothing before it, where the template cannot render none)
    try {
      before = jinja_->render({m.begin(), m.begin() + std::ptrdiff_t(k)}, true);
    } catch (const std::exception&) {
      if (k > 0) throw;
    }
    const std::string upto = jinja_->render({m.begin(), m.begin() + std::ptrdiff_t(k + 1)}, false);
    const std::size_t end = common_prefix(upto, out.text);
    if (!out.text.starts_with(before) || end < before.size())
      throw std::runtime_error(fmt::format(
          "the chat template does not render the conversation before message {} with the generation prompt as a "
          "prefix of the whole, so its answer's tokens cannot be told apart; set data.loss_on=all, or use another "
          "template",
          k + 1));
    out.counted.emplace_back(before.size(), end);
  }
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

std::vector<ChatText> read_chat_corpus(const std::string& path, const ChatRenderer& chat) {
  std::vector<ChatText> out;
  for (const auto& f : jsonl_files(path)) read_file(f, chat, chat.loss_on_all(), out);
  MOE_CHECK(!out.empty(), DataError, "{}: no chat records found (JSONL: one record a line)", path);
  return out;
}

}  // namespace moe::data
