#include "comm/host_values.h"

#include <cstring>

namespace moe {

namespace {
// Each int64 as two i32 words (host memory: the words are the value's bytes).
Tensor words_of(std::span<const std::int64_t> values) {
  Tensor t = Tensor::empty({2 * static_cast<std::int64_t>(values.size())}, DType::i32);
  if (!values.empty()) std::memcpy(t.data<std::int32_t>(), values.data(), values.size_bytes());
  return t;
}
std::vector<std::int64_t> values_of(const Tensor& words) {
  std::vector<std::int64_t> out(static_cast<std::size_t>(words.numel() / 2));
  if (!out.empty()) std::memcpy(out.data(), words.data<std::int32_t>(), out.size() * sizeof(std::int64_t));
  return out;
}
}  // namespace

std::vector<std::int64_t> all_gather_ints(Communicator& comm, std::span<const std::int64_t> mine) {
  const Tensor in = words_of(mine);
  Tensor out = Tensor::empty({comm.size() * in.numel()}, DType::i32);
  comm.all_gather(out, in);
  return values_of(out);
}

std::vector<std::int64_t> all_to_all_ints(Communicator& comm, std::span<const std::int64_t> send) {
  MOE_CHECK(send.size() == static_cast<std::size_t>(comm.size()), CommError, "all_to_all_ints: {} values for {} ranks",
            send.size(), comm.size());
  const Tensor in = words_of(send).view({comm.size(), 2});
  Tensor out = Tensor::empty({comm.size(), 2}, DType::i32);
  const std::vector<std::int64_t> one(send.size(), 1);
  comm.all_to_all_v(out, one, in, one);
  return values_of(out);
}

void broadcast_ints(Communicator& comm, std::span<std::int64_t> values, int root) {
  if (values.empty()) return;
  Tensor t = words_of(values);
  comm.broadcast(t, root);
  std::memcpy(values.data(), t.data<std::int32_t>(), values.size_bytes());
}

int first_rank_where(Communicator& comm, bool failed) {
  const std::int64_t mine = failed;
  const auto all = all_gather_ints(comm, {&mine, 1});
  for (std::size_t r = 0; r < all.size(); ++r)
    if (all[r]) return static_cast<int>(r);
  return -1;
}

Tensor word_buffer(std::size_t bytes) {
  MOE_ASSERT(bytes % 4 == 0, "word_buffer: {} bytes are not whole words", bytes);
  return Tensor::empty({static_cast<std::int64_t>(bytes / 4)}, DType::i32);
}

}  // namespace moe
