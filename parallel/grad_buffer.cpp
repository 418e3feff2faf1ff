#include "parallel/grad_buffer.h"

#include <algorithm>

namespace moe {

GradBuffer::GradBuffer(const ParamList& params, std::size_t bucket_bytes)
    : bucket_(std::max<std::int64_t>(1, static_cast<std::int64_t>(bucket_bytes / sizeof(float)))) {
  std::int64_t n = 0;
  for (const Param* p : params) n += p->w.numel();
  flat_ = Tensor::zeros({n}, DType::f32);
  std::int64_t at = 0;
  for (Param* p : params) {
    Tensor view = flat_.rows(at, p->w.numel()).view(p->w.shape());
    view.copy_from(p->g);  // keep whatever was accumulated so far
    p->g = view;
    at += p->w.numel();
  }
}

void GradBuffer::all_reduce(Communicator& comm) {
  for (std::int64_t at = 0; at < flat_.numel(); at += bucket_) {
    Tensor bucket = flat_.rows(at, std::min(bucket_, flat_.numel() - at));
    comm.all_reduce_sum(bucket);
  }
}

}  // namespace moe
