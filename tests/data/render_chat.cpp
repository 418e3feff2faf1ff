// Renders each conversation of a JSONL file ({"messages": [...]}) by a chat template
// (data::ChatRenderer: data.chat_template's value, e.g. "tokenizer" for the chat_template of
// the tokenizer.json's tokenizer_config.json) and prints {"text", "prompt", "counted", "ids"}
// per line, "prompt" rendered with the generation prompt and "ids" the tokenizer's of "text",
// for tests/data/chat_template_check.py to hold against transformers' apply_chat_template.
// Usage: render_chat TEMPLATE TOKENIZER_JSON CHATS.jsonl
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "data/chat.h"
#include "data/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: render_chat TEMPLATE TOKENIZER_JSON CHATS.jsonl\n");
    return 2;
  }
  try {
    const moe::data::ChatRenderer chat({.message = argv[1], .loss_on_all = false}, argv[2]);
    const moe::data::Tokenizer tok(argv[2]);
    std::ifstream in(argv[3]);
    for (std::string line; std::getline(in, line);) {
      std::vector<moe::data::ChatMessage> messages;
      const nlohmann::json record = nlohmann::json::parse(line);
      for (const auto& m : record.at("messages")) messages.push_back({m.at("role"), m.at("content")});
      const moe::data::ChatText c = chat.render(messages);
      std::cout << nlohmann::json{{"text", c.text},
                                  {"prompt", chat.render(messages, /*generation_prompt=*/true).text},
                                  {"counted", c.counted},
                                  {"ids", tok.encode(c.text)}}
                       .dump()
                << "\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "render_chat: %s\n", e.what());
    return 1;
  }
  return 0;
}
