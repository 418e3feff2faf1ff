// All parameter gradients in one contiguous buffer, summed over data-parallel ranks in
// buckets: a few large all-reduces instead of one per parameter (the bucketed all-reduce
// of data parallelism). Each Param::g becomes a view into the buffer, so layers accumulate
// into it unchanged.
#pragma once
#include <cstddef>

#include "model/param.h"
#include "parallel/communicator.h"

namespace moe {

class GradBuffer {
 public:
  GradBuffer(const ParamList& params, std::size_t bucket_bytes);
  void zero() { flat_.zero(); }
  // Sum over the ranks of `comm`, one all-reduce per bucket of about bucket_bytes.
  void all_reduce(Communicator& comm);
  std::int64_t buckets() const { return (flat_.numel() + bucket_ - 1) / bucket_; }
  // Every gradient, contiguous: norms and clipping act on it in one pass.
  Tensor& flat() { return flat_; }
  const Tensor& flat() const { return flat_; }

 private:
  Tensor flat_;
  std::int64_t bucket_;  // elements
};

}  // namespace moe
