#include "data/loader.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "kernels/error.h"

namespace moe::data {

Loader::Loader(const TokenStream& stream, std::int64_t seq_len, std::uint64_t seed, std::int64_t global_batch)
    : stream_(stream),
      T_(seq_len),
      W_(0),
      global_batch_(global_batch),
      seed_(seed),
      buf_(static_cast<std::size_t>(seq_len + 1)) {
  if (stream.size() > 0) W_ = static_cast<std::int64_t>((stream.size() - 1) / static_cast<std::uint64_t>(T_));
  if (W_ < 1)
    throw DataError(
        fmt::format("{}: holds fewer tokens than one sequence of model.seq_len + 1 = {}; use more text "
                    "or a shorter model.seq_len",
                    stream.describe(), T_ + 1));
}

void Loader::window(std::int64_t w, std::int32_t* tokens, std::int32_t* targets) const {
  stream_.read(static_cast<std::uint64_t>(w * T_), static_cast<std::uint64_t>(T_ + 1), buf_.data());
  std::copy_n(buf_.begin(), T_, tokens);
  std::copy_n(buf_.begin() + 1, T_, targets);
}

void Loader::fill(std::int64_t step, std::int64_t first, std::int64_t count, Tensor& tokens, Tensor& targets) {
  expect_tensor("Loader::fill", "tokens", tokens, DType::i32, {count * T_});
  expect_tensor("Loader::fill", "targets", targets, DType::i32, {count * T_});
  for (std::int64_t j = 0; j < count; ++j) {
    const std::int64_t g = step * global_batch_ + first + j, epoch = g / W_;
    if (epoch != epoch_) {  // a new epoch: its permutation, from (seed, epoch) only
      order_.resize(static_cast<std::size_t>(W_));
      std::iota(order_.begin(), order_.end(), 0);
      std::mt19937_64 rng(seed_ * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(epoch));
      for (std::int64_t i = W_ - 1; i > 0; --i)  // Fisher-Yates with our own draws: portable across libstdc++ versions
        std::swap(order_[static_cast<std::size_t>(i)],
                  order_[static_cast<std::size_t>(rng() % static_cast<std::uint64_t>(i + 1))]);
      epoch_ = epoch;
    }
    window(order_[static_cast<std::size_t>(g % W_)], tokens.data<std::int32_t>() + j * T_,
           targets.data<std::int32_t>() + j * T_);
  }
}

void Loader::fill_in_order(std::int64_t first, std::int64_t count, Tensor& tokens, Tensor& targets) const {
  expect_tensor("Loader::fill_in_order", "tokens", tokens, DType::i32, {count * T_});
  expect_tensor("Loader::fill_in_order", "targets", targets, DType::i32, {count * T_});
  for (std::int64_t j = 0; j < count; ++j)
    window((first + j) % W_, tokens.data<std::int32_t>() + j * T_, targets.data<std::int32_t>() + j * T_);
}

}  // namespace moe::data
