// `moe data prepare`: text corpus -> SentencePiece tokenizer + token shards (docs/DATA.md);
// chat data (JSONL, data/chat.h) -> token shards and loss-mask shards beside them.
#pragma once
#include <cstdint>
#include <string>

#include "data/chat.h"
#include "data/filter.h"

namespace moe {
class Communicator;
}

namespace moe::data {

struct PrepareOptions {
  std::string corpus;       // text file or directory (data/corpus.h), or chat data: .jsonl files (data/chat.h)
  std::string out_dir;      // receives tokenizer.model, train_*.bin, val_*.bin, meta.json
  std::int64_t vocab_size;  // SentencePiece vocabulary, = model.vocab_size
  double val_fraction;      // documents held out
  std::uint64_t seed;
  std::uint64_t shard_tokens = 1u << 22;
  std::string tokenizer = {};  // an existing tokenizer.model to reuse ("" = train one on the corpus)
  FilterOptions filters = {};  // applied to the corpus before the split (no copy of a training document is held out)
  // Files in out_dir that are not prepare's own (its_own_file) refuse the preparation unless
  // this is set; either way they are never deleted or overwritten.
  bool allow_other_files = false;
  // The validation split must hold at least this many tokens (one training window: seq_len + 1).
  std::uint64_t min_val_tokens = 0;
  ChatTemplate chat = {};  // how chat records render, and which tokens are targets
  std::int64_t align = 0;  // chat data: documents laid in windows of this many tokens (model.seq_len; 0: packed)
  // A trained tokenizer learns from a sample of about this many bytes of the training
  // documents (each kept with the same seeded chance; all of them when they are fewer).
  std::uint64_t tokenizer_sample_bytes = std::uint64_t{64} << 20;
  // What a deduplication sorter holds before it spills a sorted run to disk.
  std::uint64_t sort_bytes = std::uint64_t{16} << 20;
};

// Whether `name` is a file moe data prepare writes: meta.json, tokenizer.model,
// train_NNNNN.bin / val_NNNNN.bin and their loss masks mask_train_NNNNN.bin / mask_val_NNNNN.bin,
// their .tmp while written, .moe.lock, and the work directory .prepare a killed preparation
// resumes from.
bool its_own_file(const std::string& name);

struct PrepareReport {
  std::int64_t documents = 0, val_documents = 0;
  std::uint64_t train_tokens = 0, val_tokens = 0;
  double unigram_entropy = 0;       // nats per token over the training split
  FilterReport filters;             // documents = those read; documents above = those kept
  bool chat = false;                // the corpus was chat data (loss masks written)
  std::uint64_t target_tokens = 0;  // chat: training tokens the loss counts
  std::int64_t truncated = 0;       // chat: documents cut to one window
  std::string chat_template;        // chat: the template rendered by (data.chat_template, resolved)
  // Text: the corpus files, and those a killed preparation had scanned and encoded already.
  std::int64_t files = 0, resumed_scans = 0, resumed_encodes = 0;
};

// Ids (a trained or reused tokenizer.model): 0 = <unk>, 1 = end-of-document (SentencePiece's
// eos); no bos/pad. With data.tokenizer a Hugging Face tokenizer.json: its ids, and its
// eos_token's as end-of-document (meta.json's end_of_document_id). meta.json is written
// last, so a directory with it is complete.
//
// Text corpora stream through in bounded memory, the work shared by the ranks of `comm`
// (each reads its share of the files; deduplication is global; the output is the same
// whatever their number), with per-file progress in out_dir/.prepare so that a killed
// preparation resumes where it stopped (docs/DATA.md). Every rank calls it; rank 0 writes
// the shards and meta.json, and its report is the whole one. Chat data is prepared by rank 0.
PrepareReport prepare(const PrepareOptions& opt, Communicator* comm = nullptr);

// The XXH64 of DIR's tokenizer file's bytes (tokenizer.json, else tokenizer.model), as 16 hex digits ("" where there is
// none): what identifies a vocabulary beyond its size (meta.json records it; checkpoints record the digest of the data
// they trained on, and resume and init_from compare it).
std::string tokenizer_digest(const std::string& dir);

constexpr std::int32_t kEndOfDocument = 1;  // of moe's own (SentencePiece) tokenizers

}  // namespace moe::data
