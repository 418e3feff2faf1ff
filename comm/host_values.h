// Collectives on host integers, over a Communicator's tensor operations (as i32 words), for
// callers that move metadata rather than tensors: the checkpoint writer's chunk plan and
// addresses, and agreeing on the first rank that failed. Through the Communicator, their
// bytes are counted and the watchdog sees them like any other operation.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "comm/communicator.h"

namespace moe {

// Every rank's `mine` (the same length on every rank), concatenated in rank order.
std::vector<std::int64_t> all_gather_ints(Communicator& comm, std::span<const std::int64_t> mine);

// Value j of `send` goes to rank j; returns what each rank sent this one, in rank order.
std::vector<std::int64_t> all_to_all_ints(Communicator& comm, std::span<const std::int64_t> send);

// Root's `values` on every rank (the same length on every rank).
void broadcast_ints(Communicator& comm, std::span<std::int64_t> values, int root);

// The lowest rank where `failed` holds, or -1 where it holds on none.
int first_rank_where(Communicator& comm, bool failed);

// A host byte buffer all_to_all_v can move: an i32 tensor of bytes / 4 words (bytes a
// multiple of 4), one word per row.
Tensor word_buffer(std::size_t bytes);

}  // namespace moe
