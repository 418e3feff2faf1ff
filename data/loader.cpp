#include "data/loader.h"

#include <algorithm>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

#include "kernels/error.h"

namespace moe::data {

PreparedSplit::PreparedSplit(const std::string& dir, const std::string& split, std::uint64_t vocab,
                             std::int64_t seq_len)
    : tokens_(dir, split, vocab) {
  const auto path = std::filesystem::path(dir) / "meta.json";
  std::ifstream in(path);
  const auto meta = in ? nlohmann::json::parse(in, nullptr, false) : nlohmann::json();
  if (!meta.is_object()) return;  // (the shards were validated; meta.json's absence is the caller's to refuse)
  end_of_document_ = meta.value("end_of_document_id", end_of_document_);
  if (!meta.value("loss_mask", false)) return;
  // Chat data is laid out in windows of the seq_len it was prepared for: another would cut
  // conversations from their prompts.
  const auto aligned = meta.value("aligned_seq_len", std::int64_t{0});
  MOE_CHECK(aligned == 0 || aligned == seq_len, DataError,
            "{}: chat data prepared for model.seq_len = {}, the run has {}; prepare it again (moe data prepare "
            "--force) or set model.seq_len = {}",
            path.string(), aligned, seq_len, aligned);
  mask_ = std::make_unique<TokenStream>(dir, mask_split(split), 2);
}

Batch::Batch(std::int64_t count, std::int64_t T, bool documents)
    : tokens(Tensor::empty({count * T}, DType::i32)),
      targets(Tensor::empty({count * T}, DType::i32)),
      positions(documents ? Tensor::empty({count * T}, DType::i32) : Tensor()) {}

Loader::Loader(const TokenStream& stream, std::int64_t seq_len, std::uint64_t seed, std::int64_t global_batch,
               Masking masking)
    : stream_(stream),
      T_(seq_len),
      W_(0),
      global_batch_(global_batch),
      seed_(seed),
      masking_(masking),
      buf_(static_cast<std::size_t>(seq_len + 1)),
      mask_(static_cast<std::size_t>(seq_len + 1)),
      one_(masking.any() ? Batch(1, seq_len, masking.documents) : Batch()) {
  if (stream.size() > 0) W_ = static_cast<std::int64_t>((stream.size() - 1) / static_cast<std::uint64_t>(T_));
  if (W_ < 1)
    throw DataError(
        fmt::format("{}: holds fewer tokens than one sequence of model.seq_len + 1 = {}; use more text "
                    "or a shorter model.seq_len",
                    stream.describe(), T_ + 1));
  if (const TokenStream* m = masking_.loss_mask)
    MOE_CHECK(m->size() == stream.size(), DataError,
              "{}: {} loss-mask values for {} tokens ({}); re-run moe data prepare", m->describe(), m->size(),
              stream.size(), stream.describe());
}

// Row `row` of the batch from window w: inputs, targets (-1 where masked) and positions.
void Loader::window(std::int64_t w, std::int64_t row, Batch& batch) const {
  const auto begin = static_cast<std::uint64_t>(w * T_), n = static_cast<std::uint64_t>(T_ + 1);
  stream_.read(begin, n, buf_.data());
  if (masking_.loss_mask) masking_.loss_mask->read(begin, n, mask_.data());
  std::int32_t* tokens = batch.tokens.data<std::int32_t>() + row * T_;
  std::int32_t* targets = batch.targets.data<std::int32_t>() + row * T_;
  std::int32_t* positions = batch.positions.defined() ? batch.positions.data<std::int32_t>() + row * T_ : nullptr;
  std::int32_t place = 0;  // the input's place in its document
  for (std::int64_t t = 0; t < T_; ++t) {
    const auto i = static_cast<std::size_t>(t);
    const bool ends = masking_.documents && buf_[i] == masking_.end_of_document;
    const bool counted = !ends && (!masking_.loss_mask || mask_[i + 1] != 0);
    tokens[t] = buf_[i];
    targets[t] = counted ? buf_[i + 1] : -1;
    if (positions) positions[t] = place;
    place = ends ? 0 : place + 1;
  }
}

std::int64_t Loader::window_targets(std::int64_t w) const {
  if (!masking_.any()) return T_;
  window(w, 0, one_);
  const std::int32_t* tg = one_.targets.data<std::int32_t>();
  return std::count_if(tg, tg + T_, [](std::int32_t v) { return v >= 0; });
}

void Loader::permute(std::int64_t epoch) {
  if (epoch == epoch_) return;
  order_.resize(static_cast<std::size_t>(W_));
  std::iota(order_.begin(), order_.end(), 0);
  std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(epoch));
  for (std::int64_t i = W_ - 1; i > 0; --i)  // Fisher-Yates with our own draws: portable across libstdc++ versions
    std::swap(order_[static_cast<std::size_t>(i)],
              order_[static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(i + 1))]);
  epoch_ = epoch;
}

// The window of global sample g: epoch g / W's permutation (from (seed, epoch) only) at g mod W.
std::int64_t Loader::window_at(std::int64_t g) {
  permute(g / W_);
  return order_[static_cast<std::size_t>(g % W_)];
}

void Loader::expect_batch(const char* op, const Batch& batch, std::int64_t count) const {
  expect_tensor(op, "tokens", batch.tokens, DType::i32, {count * T_});
  expect_tensor(op, "targets", batch.targets, DType::i32, {count * T_});
  if (masking_.documents) expect_tensor(op, "positions", batch.positions, DType::i32, {count * T_});
}

void Loader::fill(std::int64_t step, std::int64_t first, std::int64_t count, Batch& batch) {
  expect_batch("Loader::fill", batch, count);
  for (std::int64_t j = 0; j < count; ++j) window(window_at(step * global_batch_ + first + j), j, batch);
}

void Loader::fill_sample(std::int64_t g, std::int64_t row, Batch& batch) { window(window_at(g), row, batch); }

std::int64_t Loader::sample_targets(std::int64_t g) { return window_targets(window_at(g)); }

void Loader::fill_in_order(std::int64_t first, std::int64_t count, Batch& batch) const {
  expect_batch("Loader::fill_in_order", batch, count);
  for (std::int64_t j = 0; j < count; ++j) window((first + j) % W_, j, batch);
}

std::int64_t Loader::targets(std::int64_t step) {
  if (!masking_.any()) return global_batch_ * T_;
  std::int64_t n = 0;
  for (std::int64_t j = 0; j < global_batch_; ++j) n += sample_targets(step * global_batch_ + j);
  return n;
}

std::int64_t Loader::targets_in_order(std::int64_t batches) const {
  if (!masking_.any()) return batches * global_batch_ * T_;
  std::int64_t n = 0;
  for (std::int64_t s = 0; s < batches * global_batch_; ++s) n += window_targets(s % W_);
  return n;
}

}  // namespace moe::data
