// Chat data: rendering with the template, the spans the loss counts, JSONL errors, and what
// moe data prepare and the loader make of it (loss masks, windows aligned to documents,
// document positions).
#include <catch2/catch.hpp>

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>

#include "data/chat.h"
#include "data/jinja_chat.h"
#include "data/loader.h"
#include "data/prepare.h"
#include "kernels/error.h"
#include "tests/support/corpus.h"

using namespace moe;
using namespace moe::data;
namespace fs = std::filesystem;

namespace {
std::string counted_text(const ChatText& c) {
  std::string out;
  for (const auto& [b, e] : c.counted) out += c.text.substr(b, e - b) + "|";
  return out;
}
}  // namespace

TEST_CASE("chat: the template renders each message, the assistant's content and tail count", "[data]") {
  const ChatTemplate t{.message = "[{role}] {content};", .loss_on_all = false};
  const std::vector<ChatMessage> m = {
      {"system", "be brief"}, {"user", "2+2?"}, {"assistant", "4"}, {"user", "and 3+3?"}, {"assistant", "6"}};
  const ChatText c = ChatRenderer(t).render(m);
  CHECK(c.text == "[system] be brief;[user] 2+2?;[assistant] 4;[user] and 3+3?;[assistant] 6;");
  CHECK(counted_text(c) == "4;|6;|");
  CHECK(c.counts_end);
  const ChatText prompt = ChatRenderer(t).render({{"user", "2+2?"}}, /*generation_prompt=*/true);
  CHECK(prompt.text == "[user] 2+2?;[assistant] ");
  CHECK_FALSE(prompt.counts_end);
  CHECK(counted_text(ChatRenderer({.message = t.message, .loss_on_all = true}).render(m)) == c.text + "|");
  CHECK_FALSE(valid_chat_template("{content} by {role}"));
  CHECK_FALSE(valid_chat_template("{role}: {content} {content}"));
}

namespace {
// ChatML, as Qwen's tokenizer_config.json writes it (a default system message, the generation
// prompt opening the assistant's turn).
constexpr const char* kChatML =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
}  // namespace

TEST_CASE("chat: a Jinja template renders as transformers would, the answers' spans from its prefixes", "[data]") {
  if (!JinjaChat::available()) {
    WARN("built without minja (deps/minja): Jinja chat templates untested");
    return;
  }
  const ChatRenderer chat({.message = kChatML, .loss_on_all = false});
  const std::vector<ChatMessage> m = {{"user", "2+2?"}, {"assistant", "4"}, {"user", "3+3?"}, {"assistant", "6"}};
  const ChatText c = chat.render(m);
  CHECK(c.text ==
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n6<|im_end|>\n");
  CHECK(counted_text(c) == "4<|im_end|>\n|6<|im_end|>\n|");  // content and the turn's closing
  CHECK(c.counts_end);
  const ChatText prompt = chat.render({{"user", "2+2?"}}, true);
  CHECK(prompt.text ==
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n");
  CHECK_FALSE(prompt.counts_end);
  CHECK(counted_text(ChatRenderer({.message = kChatML, .loss_on_all = true}).render(m)) == c.text + "|");
  // The template's own errors, and a template whose shorter conversations are no prefixes.
  const ChatRenderer strict({.message = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}"
                                        "{% endif %}{% for m in messages %}{{ m['content'] }};{% endfor %}",
                             .loss_on_all = false});
  CHECK_THROWS_WITH(strict.render({{"assistant", "hi"}}), Catch::Contains("user first") && !Catch::Contains("\n"));
  // An opening answer under a template that reads messages[0]: nothing comes before it.
  const ChatRenderer first({.message = "{% if messages[0]['role'] == 'system' %}[sys]{% endif %}"
                                       "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                                       "{% if add_generation_prompt %}<assistant>{% endif %}",
                            .loss_on_all = false});
  CHECK(counted_text(first.render({{"assistant", "hi"}, {"user", "yes?"}})) == "<assistant>hi|");
  const ChatRenderer counted_first(
      {.message = "{{ messages | length }} messages\n{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                  "{% endfor %}",
       .loss_on_all = false});
  CHECK_THROWS_WITH(counted_first.render(m), Catch::Contains("prefix"));
  CHECK_NOTHROW(ChatRenderer({.message = counted_first.source(), .loss_on_all = true}).render(m));
  CHECK_THROWS_AS(ChatRenderer({.message = "{% for m in messages %}{{ m['content'] }", .loss_on_all = false}),
                  ConfigError);
  CHECK_THROWS_WITH(ChatRenderer({.message = "tokenizer", .loss_on_all = false}),
                    Catch::Contains("data.tokenizer names none"));
}

TEST_CASE("chat: a bad JSONL record is an error naming file:line and what is wrong", "[data]") {
  fs::create_directories("chat_bad");
  const ChatTemplate t;
  auto fails = [&](const std::string& line, const std::string& what) {
    std::ofstream("chat_bad/a.jsonl") << R"({"prompt": "1+1=", "completion": "2"})"
                                      << "\n"
                                      << line << "\n";
    CHECK_THROWS_WITH(read_chat_corpus("chat_bad", ChatRenderer(t)),
                      Catch::Contains("chat_bad/a.jsonl:2: ") && Catch::Contains(what));
  };
  fails("{not json", "parse error");
  fails(R"({"messages": []})", "non-empty array");
  fails(R"({"messages": [{"role": "bot", "content": "hi"}]})", "role \"bot\"");
  fails(R"({"messages": [{"role": "user", "content": 3}]})", "\"content\" must be a string");
  fails(R"({"prompt": "only"})", "\"completion\" must be a string");
  fails("[1, 2]", "JSON object");
}

TEST_CASE("chat prepare: loss masks beside the tokens, windows aligned to conversations, positions per document",
          "[data]") {
  // The base tokenizer from plain text, as fine-tuning reuses the pre-trained model's.
  testing::write_corpus("chat_base.txt", 120);
  prepare({.corpus = "chat_base.txt", .out_dir = "chat_base", .vocab_size = 300, .val_fraction = 0.1, .seed = 1});
  fs::create_directories("chat_corpus");
  {
    std::ofstream out("chat_corpus/tasks.jsonl");
    for (int i = 0; i < 60; ++i) {
      if (i % 3 == 0)
        out << R"({"prompt": "reverse )" << i << R"(: ", "completion": ")" << std::to_string(i * 7) << "\"}\n";
      else
        out << R"({"messages": [{"role": "user", "content": "add )" << i << " and " << i % 7
            << R"("}, {"role": "assistant", "content": ")" << i + i % 7 << "\"}]}\n";
    }
  }
  const std::int64_t T = 64;
  const auto rep = prepare({.corpus = "chat_corpus",
                            .out_dir = "chat_data",
                            .vocab_size = 300,
                            .val_fraction = 0.1,
                            .seed = 1,
                            .tokenizer = "chat_base/tokenizer.model",
                            .chat = {.message = "{role}: {content}\n", .loss_on_all = false},
                            .align = T});
  CHECK(rep.chat);
  CHECK(rep.documents == 60);
  CHECK(rep.truncated == 0);
  CHECK(rep.train_tokens % T == 1);  // whole windows, and the last one's last target
  // Document masking is on for chat data unless the config says otherwise (data.document_mask: auto).
  CHECK(PreparedSplit("chat_data", "train", 300, T).masking(DocumentMask::automatic).documents);
  CHECK_FALSE(PreparedSplit("chat_data", "train", 300, T).masking(DocumentMask::off).documents);
  CHECK_FALSE(PreparedSplit("chat_base", "train", 300, T).masking(DocumentMask::automatic).documents);
  CHECK(PreparedSplit("chat_base", "train", 300, T).masking(DocumentMask::on).documents);
  CHECK_THROWS_WITH(PreparedSplit("chat_data", "train", 300, 2 * T),
                    Catch::Contains("chat data prepared for model.seq_len = 64, the run has 128"));
  TokenStream stream("chat_data", "train", 300), mask("chat_data", mask_split("train"), 2);
  REQUIRE(mask.size() == stream.size());
  Loader loader(stream, T, 1, 1, {.loss_mask = &mask, .documents = true, .end_of_document = kEndOfDocument});
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load("chat_data/tokenizer.model").ok());
  std::int64_t counted = 0;
  for (std::int64_t w = 0; w < loader.windows(); ++w) {
    Batch b(1, T, true);
    loader.fill_in_order(w, 1, b);
    const std::int32_t *tok = b.tokens.data<std::int32_t>(), *tgt = b.targets.data<std::int32_t>(),
                       *pos = b.positions.data<std::int32_t>();
    CHECK(pos[0] == 0);  // every window starts a conversation (or padding)
    std::vector<int> answer;
    for (std::int64_t t = 0; t < T; ++t) {
      if (t > 0) CHECK(pos[t] == (tok[t - 1] == kEndOfDocument ? 0 : pos[t - 1] + 1));
      if (tok[t] == kEndOfDocument) CHECK(tgt[t] == -1);  // nothing predicts the next document
      if (tgt[t] >= 0) ++counted, answer.push_back(tgt[t]);
    }
    // What counts is the assistant's answers (digits and the template's newline) and their ends.
    std::string text;
    for (int id : answer) text += id == kEndOfDocument ? "</s>" : sp.DecodeIds({id});
    INFO("window " << w << ": " << text);
    CHECK(text.find_first_not_of("0123456789\n </s>") == std::string::npos);
    CHECK(text.find("</s>") != std::string::npos);
  }
  // Every token the mask counts is a target, none other: the first token of a conversation
  // is its prompt's, and padding counts nowhere.
  CHECK(counted == static_cast<std::int64_t>(rep.target_tokens));
  CHECK(loader.targets_in_order(loader.windows()) == counted);
  CHECK(counted < loader.windows() * T / 2);  // most tokens are prompts and padding
}
