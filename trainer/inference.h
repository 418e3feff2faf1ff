// A trained model run without training it, in one process: `moe generate` (sampling text from
// a prompt) and `moe eval` (perplexity on data, multiple-choice accuracy by log-likelihood, as
// lm-evaluation-harness scores it). The model is the checkpoint's, built from its own config.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/tokenizer.h"
#include "model/transformer.h"

namespace moe {

struct InferenceModel {
  std::string checkpoint;
  Config cfg;  // the checkpoint's run
  std::unique_ptr<Transformer> model;
  data::Tokenizer tokenizer;
};

// The checkpoint's model and tokenizer: `tokenizer`, else its run's data.dir/tokenizer.model
// (a one-line error naming both when neither is there).
InferenceModel load_inference(const std::string& checkpoint, const std::string& tokenizer = "");

struct Sampling {
  std::int64_t max_new_tokens = 64;
  std::int64_t min_new_tokens = 0;  // end-of-document is not sampled before this many (transformers' min_new_tokens)
  double temperature = 0;           // 0: greedy (the most likely token)
  std::int64_t top_k = 0;           // keep the k most likely tokens (0: all)
  double top_p = 1;                 // keep the fewest most likely tokens whose probability reaches p (1: all)
  std::uint64_t seed = 0;
  bool kv_cache = true;  // decode each token after a KV cache (false: recompute the window per token)
};

// The log-probabilities (V) of the token after `ids`: the model reads the last model.seq_len
// of them.
std::vector<double> next_log_probs(InferenceModel& m, const std::vector<int>& ids);

// Tokens sampled after `prompt` until end-of-document (not returned) or max_new_tokens; the
// same prompt, options and seed give the same tokens. on_token sees the tokens so far. With
// the KV cache, the prompt is read once and each token after it alone (Transformer::decode),
// up to model.seq_len tokens; past them every token recomputes the last seq_len.
std::vector<int> generate(InferenceModel& m, const std::vector<int>& prompt, const Sampling& s,
                          const std::function<void(const std::vector<int>&)>& on_token = {});

// The text a chat model is prompted with: the user's message rendered by the run's
// data.chat_template, then the assistant's header.
std::string chat_prompt(const InferenceModel& m, const std::string& user_message);

struct Perplexity {
  double loss = 0;  // mean cross-entropy over the counted targets, nats per token
  double perplexity = 0;
  std::int64_t tokens = 0, windows = 0;
};
// Over the first `windows` windows (0: all) of a prepared directory's split, in stream order,
// with the run's masking (chat data's loss mask, data.document_mask): the trainer's
// validation loss on the same windows.
Perplexity perplexity_on_split(InferenceModel& m, const std::string& dir, const std::string& split,
                               std::int64_t windows = 0);
// Over a text file's documents (data/corpus.h), each followed by end-of-document, packed and
// cut into windows as moe data prepare and the loader do.
Perplexity perplexity_on_text(InferenceModel& m, const std::string& path);

struct MultipleChoice {
  std::int64_t questions = 0;
  double accuracy = 0, accuracy_norm = 0;            // by log-likelihood, and by it per byte of the choice
  std::vector<std::vector<double>> log_likelihoods;  // per question, per choice
};
// A JSONL task, one question a line: {"context": "...", "choices": ["...", ...], "answer": i}.
// Each choice scores the log-likelihood of its tokens after the context's (the context and
// the choice encoded together, the context's tokens cut off: lm-evaluation-harness's way).
MultipleChoice multiple_choice(InferenceModel& m, const std::string& path);

}  // namespace moe
