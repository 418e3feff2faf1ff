// The command lines of `moe generate` and `moe eval` (trainer/inference.h does the work).
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct InferenceArgs {
  std::string path, tokenizer;
  // generate
  std::vector<std::string> prompts;
  std::string prompts_file;
  bool chat = false, jsonl = false, no_kv_cache = false;
  std::int64_t max_new_tokens = 64, min_new_tokens = 0, top_k = 0;
  double temperature = 0, top_p = 1;
  std::uint64_t seed = 0;
  // eval
  std::string data_dir, split = "val", text, choices;
  std::int64_t windows = 0;
};

CLI::App* add_generate(CLI::App& app, InferenceArgs& a);
CLI::App* add_eval(CLI::App& app, InferenceArgs& a);
// path: a checkpoint file (a run directory already resolved to its latest).
int run_generate(const InferenceArgs& a, const std::string& checkpoint);
int run_eval(const InferenceArgs& a, const std::string& checkpoint);

}  // namespace moe
