// Encodes each line of a JSONL file ({"text": ...}) with a tokenizer (data::Tokenizer: a
// tokenizer.json or tokenizer.model) and prints {"ids": [...], "decoded": ...} per line, for
// tests/data/hf_tokenizer_check.py to hold against Hugging Face's tokenizers library.
// Usage: tokenize TOKENIZER TEXTS.jsonl
#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "data/tokenizer.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: tokenize TOKENIZER TEXTS.jsonl\n");
    return 2;
  }
  try {
    const moe::data::Tokenizer tok(argv[1]);
    std::ifstream in(argv[2]);
    for (std::string line; std::getline(in, line);) {
      const std::string text = nlohmann::json::parse(line).at("text");
      const auto ids = tok.encode(text);
      std::cout << nlohmann::json{{"ids", ids}, {"decoded", tok.decode(ids)}}.dump() << "\n";
    }
    std::cout << nlohmann::json{{"end_of_document", tok.end_of_document()}, {"size", tok.size()}}.dump() << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tokenize: %s\n", e.what());
    return 1;
  }
  return 0;
}
