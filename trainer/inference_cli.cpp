#include "trainer/inference_cli.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <fstream>
#include <iostream>

#include "kernels/error.h"
#include "trainer/inference.h"

namespace moe {
namespace {

void add_model_arguments(CLI::App* cmd, InferenceArgs& a) {
  cmd->add_option("path", a.path, "a step_N.h5 file, or a run directory (its latest)")
      ->required()
      ->check(CLI::ExistingPath);
  cmd->add_option("--tokenizer", a.tokenizer,
                  "the tokenizer.model or tokenizer.json the model was trained with (default: its run's data.dir's)");
}

std::vector<std::string> prompts_of(const InferenceArgs& a) {
  std::vector<std::string> out = a.prompts;
  if (!a.prompts_file.empty()) {
    std::ifstream in(a.prompts_file);
    MOE_CHECK(in, ConfigError, "--prompts-file {}: cannot read", a.prompts_file);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) out.push_back(line);
  }
  if (out.empty()) out.emplace_back();  // no prompt: from the start of a document
  return out;
}

}  // namespace

CLI::App* add_generate(CLI::App& app, InferenceArgs& a) {
  auto* g = app.add_subcommand("generate", "sample text from a trained model (one process)");
  add_model_arguments(g, a);
  g->add_option("--prompt", a.prompts, "a prompt (repeatable; none: from the start of a document)");
  g->add_option("--prompts-file", a.prompts_file, "a file of prompts, one a line")->check(CLI::ExistingFile);
  g->add_flag("--chat", a.chat, "render each prompt as a user's message by the run's data.chat_template");
  g->add_option("--max-new-tokens", a.max_new_tokens, "tokens to generate at most")->check(CLI::PositiveNumber);
  g->add_option("--min-new-tokens", a.min_new_tokens, "no end of document before this many tokens")
      ->check(CLI::NonNegativeNumber);
  g->add_option("--temperature", a.temperature, "0: greedy; else softmax(logits / t) sampling")
      ->check(CLI::NonNegativeNumber);
  g->add_option("--top-k", a.top_k, "sample among the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber);
  g->add_option("--top-p", a.top_p, "sample among the fewest most likely tokens reaching this probability")
      ->check(CLI::Range(0.0, 1.0));
  g->add_option("--seed", a.seed, "sampling seed: the same prompt and seed give the same text");
  g->add_flag("--no-kv-cache", a.no_kv_cache, "recompute the whole window for every token (the cache's oracle)");
  g->add_flag("--jsonl", a.jsonl,
              "print {\"prompt\", \"prompt_ids\", \"completion\", \"completion_ids\"} per prompt instead of "
              "streaming text");
  return g;
}

CLI::App* add_eval(CLI::App& app, InferenceArgs& a) {
  auto* e = app.add_subcommand("eval",
                               "score a trained model: perplexity on prepared data or a text file, multiple-choice "
                               "accuracy; JSON on stdout");
  add_model_arguments(e, a);
  e->add_option("--data", a.data_dir, "a prepared directory (default: the run's data.dir)")
      ->check(CLI::ExistingDirectory);
  e->add_option("--split", a.split, "its split: val or train");
  e->add_option("--windows", a.windows, "the first N windows of the split (0: all)")->check(CLI::NonNegativeNumber);
  e->add_option("--text", a.text, "perplexity on a text file or directory instead (documents as data prepare reads)")
      ->check(CLI::ExistingPath);
  e->add_option("--choices", a.choices,
                "a multiple-choice task: JSONL of {\"context\", \"choices\": [...], \"answer\": index}")
      ->check(CLI::ExistingFile);
  return e;
}

int run_generate(const InferenceArgs& a, const std::string& checkpoint) {
  InferenceModel m = load_inference(checkpoint, a.tokenizer);
  const Sampling s{.max_new_tokens = a.max_new_tokens,
                   .min_new_tokens = a.min_new_tokens,
                   .temperature = a.temperature,
                   .top_k = a.top_k,
                   .top_p = a.top_p,
                   .seed = a.seed,
                   .kv_cache = !a.no_kv_cache};
  for (const std::string& p : prompts_of(a)) {
    const std::string text = a.chat ? chat_prompt(m, p) : p;
    std::size_t shown = 0;  // streamed characters of the completion
    const auto stream = [&](const std::vector<int>& ids) {
      const std::string so_far = m.tokenizer.decode(ids);
      if (so_far.size() > shown) std::fwrite(so_far.data() + shown, 1, so_far.size() - shown, stdout);
      shown = std::max(shown, so_far.size());
      std::fflush(stdout);
    };
    if (!a.jsonl) std::fwrite(text.data(), 1, text.size(), stdout);
    const std::vector<int> prompt_ids = m.tokenizer.encode(text);
    const auto out = generate(m, prompt_ids, s, a.jsonl ? nullptr : std::function(stream));
    if (a.jsonl)
      std::cout << nlohmann::json{{"prompt", p},
                                  {"prompt_ids", prompt_ids},
                                  {"completion", m.tokenizer.decode(out)},
                                  {"completion_ids", out}}
                       .dump(-1, ' ', false,
                             nlohmann::json::error_handler_t::replace)  // (SentencePiece may cut a character too)
                << "\n";
    else std::cout << "\n";
  }
  return 0;
}

int run_eval(const InferenceArgs& a, const std::string& checkpoint) {
  InferenceModel m = load_inference(checkpoint, a.tokenizer);
  nlohmann::json out = {{"checkpoint", checkpoint}};
  auto put = [&](const char* key, const Perplexity& p) {
    out[key] = {{"loss", p.loss}, {"perplexity", p.perplexity}, {"tokens", p.tokens}, {"windows", p.windows}};
  };
  if (!a.text.empty()) put("text", perplexity_on_text(m, a.text));
  if (!a.choices.empty()) {
    const auto r = multiple_choice(m, a.choices);
    out["multiple_choice"] = {{"task", a.choices},
                              {"questions", r.questions},
                              {"accuracy", r.accuracy},
                              {"accuracy_norm", r.accuracy_norm},
                              {"log_likelihoods", r.log_likelihoods}};
  }
  if (a.text.empty() && a.choices.empty()) {
    const std::string dir = a.data_dir.empty() ? m.cfg.data.dir : a.data_dir;
    put("data", perplexity_on_split(m, dir, a.split, a.windows));
    out["data"]["dir"] = dir, out["data"]["split"] = a.split;
  }
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace moe
