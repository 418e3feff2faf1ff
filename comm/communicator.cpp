#include "comm/communicator.h"

#include <algorithm>
#include <exception>
#include <atomic>
#include <chrono>
#include <iterator>
#include <thread>
#include <utility>

namespace moe {
namespace {

// Elements per row of dim 0, from the shape (1 for a 1-D tensor, also when it has no rows).
std::int64_t row_elems(const Tensor& t) {
  std::int64_t n = 1;
  for (int d = 1; d < t.ndim(); ++d) n *= t.size(d);
  return n;
}
std::int64_t rows_of(const Tensor& t) { return t.ndim() ? t.size(0) : 0; }

// The reduced dtypes: moving bf16/fp8 bits is fine, summing them is not.
void expect_reducible(const char* op, const Tensor& t) {
  MOE_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64 || t.dtype() == DType::i32, CommError,
            "{}: cannot sum {} tensors", op, dtype_name(t.dtype()));
}

std::uint64_t u64(std::int64_t n) { return static_cast<std::uint64_t>(n); }

}  // namespace

namespace {
std::atomic<const char*> g_op{nullptr}, g_label{nullptr};
std::atomic<double> g_last_completed{0};
double steady_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

CommActivity comm_activity() { return {g_op.load(), g_label.load(), g_last_completed.load()}; }

// Also the operation's KernelScope: a backend reads and writes its device's tensors (NCCL
// takes GPU pointers, MPI on the sim device its host memory), as an op's kernels do.
struct Communicator::Timer {
  Timer(double& total, const char* op, const std::string& label)
      : total_(total), t0_(std::chrono::steady_clock::now()), scope_(op) {
    g_label.store(label.c_str()), g_op.store(op);
  }
  ~Timer() {
    total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    g_op.store(nullptr), g_last_completed.store(steady_seconds());
  }
  double& total_;
  std::chrono::steady_clock::time_point t0_;
  KernelScope scope_;
};

std::map<std::string, std::uint64_t> Communicator::bytes_sent() const {
  static const char* const names[kKinds] = {"all_reduce", "reduce_scatter", "all_gather",
                                            "all_to_all", "send",           "broadcast"};
  std::map<std::string, std::uint64_t> out;
  for (int k = 0; k < kKinds; ++k)
    if (used_[k]) out[names[k]] = bytes_[k];
  return out;
}

void Communicator::reset_bytes() {
  std::fill(std::begin(bytes_), std::end(bytes_), 0);
  std::fill(std::begin(used_), std::end(used_), false);
}

void Communicator::expect_here(const char* op, const Tensor& t) const {
  MOE_CHECK(takes(t.device()), CommError, "{}: this backend takes {} tensors, got {}", op, device_name(device()),
            t.describe());
}

void Communicator::expect_peer(const char* op, int peer) const {
  MOE_CHECK(peer >= 0 && peer < size_, CommError, "{}: peer {} outside a group of {} ranks", op, peer, size_);
}

bool Communicator::staged(const Tensor& t) const { return t.defined() && !takes(t.device()); }

Communicator* Communicator::twin_for(std::initializer_list<const Tensor*> ts) const {
  if (!host_twin_) return nullptr;
  for (const Tensor* t : ts)
    if (t->defined() && (takes(t->device()) || !host_readable(t->device()))) return nullptr;
  return host_twin_;
}
Tensor Communicator::here(const Tensor& t) const { return t.device() == device() ? t : t.to(device()); }

void Communicator::all_reduce_sum(Tensor& t) {
  const char* op = "all_reduce_sum";
  if (Communicator* twin = twin_for({&t})) return twin->all_reduce_sum(t);
  if (staged(t)) {
    Tensor h = here(t);
    all_reduce_sum(h);
    return t.copy_from(h);
  }
  expect_here(op, t);
  expect_reducible(op, t);
  if (size_ > 1) {  // a group of one has nothing to add (NCCL would still launch and wait)
    Timer timer(seconds_, op, label_);
    do_all_reduce_sum(t);
  }
  count(kAllReduce, 2 * u64(size_ - 1) * t.nbytes() / u64(size_));  // ring: reduce-scatter + all-gather
}

void Communicator::reduce_scatter_sum(Tensor& out, const Tensor& in) {
  const char* op = "reduce_scatter_sum";
  if (Communicator* twin = twin_for({&in, &out})) return twin->reduce_scatter_sum(out, in);
  if (staged(in) || staged(out)) {
    Tensor h = Tensor::empty(out.shape(), out.dtype(), device());
    reduce_scatter_sum(h, here(in));
    return out.copy_from(h);
  }
  expect_here(op, in), expect_here(op, out);
  expect_reducible(op, in);
  MOE_CHECK(in.numel() == out.numel() * size_ && in.dtype() == out.dtype(), CommError,
            "{}: in {} must hold {} x out {}", op, in.describe(), size_, out.describe());
  if (size_ == 1) out.copy_from(in.view(out.shape()));
  else {
    Timer timer(seconds_, op, label_);
    do_reduce_scatter_sum(out, in);
  }
  count(kReduceScatter, u64(size_ - 1) * out.nbytes());
}

void Communicator::all_gather(Tensor& out, const Tensor& in) {
  const char* op = "all_gather";
  if (Communicator* twin = twin_for({&in, &out})) return twin->all_gather(out, in);
  if (staged(in) || staged(out)) {
    Tensor h = Tensor::empty(out.shape(), out.dtype(), device());
    all_gather(h, here(in));
    return out.copy_from(h);
  }
  expect_here(op, in), expect_here(op, out);
  MOE_CHECK(out.numel() == in.numel() * size_ && in.dtype() == out.dtype(), CommError,
            "{}: out {} must hold {} x in {}", op, out.describe(), size_, in.describe());
  if (size_ == 1) out.copy_from(in.view(out.shape()));
  else {
    Timer timer(seconds_, op, label_);
    do_all_gather(out, in);
  }
  count(kAllGather, u64(size_ - 1) * in.nbytes());
}

void Communicator::all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                                std::span<const std::int64_t> send_rows) {
  const char* op = "all_to_all_v";
  if (Communicator* twin = twin_for({&in, &out})) return twin->all_to_all_v(out, recv_rows, in, send_rows);
  if (staged(in) || staged(out)) {
    Tensor h = Tensor::empty(out.shape(), out.dtype(), device());
    all_to_all_v(h, recv_rows, here(in), send_rows);
    return out.copy_from(h);
  }
  const std::uint64_t bytes = split_rows(op, out, recv_rows, in, send_rows);
  if (size_ == 1) return keep_own_rows(out, in);
  {
    Timer timer(seconds_, op, label_);
    const double posted = steady_seconds();
    do_all_to_all_v(out, in, split_);
    sleep_until_delivered(posted);
  }
  count(kAllToAll, bytes);  // exact: rows handed to other ranks
}

PendingExchange Communicator::start_all_to_all_v(Tensor& out, std::span<const std::int64_t> recv_rows, const Tensor& in,
                                                 std::span<const std::int64_t> send_rows) {
  const char* op = "start_all_to_all_v";
  PendingExchange e;
  if (Communicator* twin = twin_for({&in, &out})) return twin->start_all_to_all_v(out, recv_rows, in, send_rows);
  if (staged(in) || staged(out)) {
    all_to_all_v(out, recv_rows, in, send_rows);
    return e;
  }
  const std::uint64_t bytes = split_rows(op, out, recv_rows, in, send_rows);
  if (size_ == 1) {
    keep_own_rows(out, in);
    return e;
  }
  e.posted_ = steady_seconds(), e.keep_[0] = in, e.keep_[1] = out;
  {
    Timer timer(seconds_, op, label_);
    e.handle_ = do_start_all_to_all_v(out, in, split_);
  }
  e.comm_ = this;  // started: from here on it must be finished
  count(kAllToAll, bytes);
  return e;
}

void Communicator::keep_own_rows(Tensor& out, const Tensor& in) {
  if (in.numel() > 0) out.copy_from(in.view(out.shape()));
  count(kAllToAll, 0);
}

void Communicator::abandon(PendingExchange& e) {
  for (Tensor& t : e.keep_) abandoned_.push_back(std::move(t));
  e.comm_ = nullptr;
}

void Communicator::finish(PendingExchange& e) {
  // The time computed since the later of its start and the last finish: exchanges started
  // together (FP8 rows and scales) count their overlap once.
  const double now = steady_seconds();
  overlapped_ += std::max(0.0, now - std::max(e.posted_, overlap_counted_until_));
  overlap_counted_until_ = now;
  Timer timer(seconds_, "finish_all_to_all_v", label_);
  do_finish(e.handle_);
  sleep_until_delivered(e.posted_);
}

void Communicator::sleep_until_delivered(double posted) const {
  const double left = posted + link_delay_ - steady_seconds();
  if (left > 0) std::this_thread::sleep_for(std::chrono::duration<double>(left));
}

PendingExchange::~PendingExchange() {
  if (!comm_) return;
  // An exception unwinding past it: waiting could hang on a peer that failed too, so the
  // buffers are kept alive for the transfer instead (the process is on its way out).
  if (std::uncaught_exceptions() > 0) {
    comm_->abandon(*this);
    return;
  }
  try {
    finish();
  } catch (...) {  // a failure to finish is a consequence of the first error, not news
  }
}

void PendingExchange::finish() {
  if (!comm_) return;
  Communicator* c = std::exchange(comm_, nullptr);
  c->finish(*this);
  keep_[0] = Tensor(), keep_[1] = Tensor();
}

std::uint64_t Communicator::split_rows(const char* op, Tensor& out, std::span<const std::int64_t> recv_rows,
                                       const Tensor& in, std::span<const std::int64_t> send_rows) {
  expect_here(op, in), expect_here(op, out);
  const auto p = static_cast<std::size_t>(size_);
  MOE_CHECK(send_rows.size() == p && recv_rows.size() == p, CommError, "{}: {} send and {} receive counts for {} ranks",
            op, send_rows.size(), recv_rows.size(), p);
  MOE_CHECK(in.dtype() == out.dtype() && in.ndim() >= 1 && out.ndim() >= 1 && row_elems(in) == row_elems(out),
            CommError, "{}: in {} and out {} differ in dtype or row size", op, in.describe(), out.describe());
  const std::int64_t row = row_elems(in);
  Split& s = split_;
  for (auto* v : {&s.send_count, &s.send_offset, &s.recv_count, &s.recv_offset}) v->resize(p);
  std::int64_t so = 0, ro = 0, sent = 0, got = 0;  // elements, rows
  std::uint64_t bytes = 0;
  bool negative = false;
  for (std::size_t j = 0; j < p; ++j) {
    negative |= send_rows[j] < 0 || recv_rows[j] < 0;
    sent += send_rows[j], got += recv_rows[j];
    s.send_count[j] = send_rows[j] * row, s.send_offset[j] = so, so += s.send_count[j];
    s.recv_count[j] = recv_rows[j] * row, s.recv_offset[j] = ro, ro += s.recv_count[j];
    if (static_cast<int>(j) != rank_) bytes += u64(s.send_count[j]) * dtype_size(in.dtype());
  }
  MOE_CHECK(!negative && sent == rows_of(in) && got == rows_of(out), CommError,
            "{}: counts send {} / receive {} rows, tensors hold {} / {}", op, sent, got, rows_of(in), rows_of(out));
  return bytes;
}

void Communicator::send(const Tensor& t, int peer, int tag) { send_to("send", t, peer, tag, false); }
void Communicator::post_send(const Tensor& t, int peer, int tag) { send_to("post_send", t, peer, tag, true); }

void Communicator::send_to(const char* op, const Tensor& t, int peer, int tag, bool post) {
  if (Communicator* twin = twin_for({&t})) return post ? twin->post_send(t, peer, tag) : twin->send(t, peer, tag);
  if (staged(t)) return send_to(op, here(t), peer, tag, post);  // a posted send keeps its copy
  expect_here(op, t);
  expect_peer(op, peer);
  {
    Timer timer(seconds_, op, label_);
    if (post) do_post_send(t, peer, tag);
    else do_send(t, peer, tag);
  }
  count(kSend, t.nbytes());
}

void Communicator::recv(Tensor& t, int peer, int tag) {
  const char* op = "recv";
  if (Communicator* twin = twin_for({&t})) return twin->recv(t, peer, tag);
  if (staged(t)) {
    Tensor h = Tensor::empty(t.shape(), t.dtype(), device());
    recv(h, peer, tag);
    return t.copy_from(h);
  }
  expect_here(op, t);
  expect_peer(op, peer);
  {
    Timer timer(seconds_, op, label_);
    do_recv(t, peer, tag);
  }
}

std::string Communicator::broadcast_text(const std::string& text, int root) {
  Tensor n = Tensor::empty({1}, DType::i32);
  n.data<std::int32_t>()[0] = static_cast<std::int32_t>(text.size());
  broadcast(n, root);
  const std::int32_t len = n.data<std::int32_t>()[0];
  if (len == 0) return {};
  Tensor bytes = Tensor::empty({len}, DType::i32);
  if (rank_ == root) std::copy(text.begin(), text.end(), bytes.data<std::int32_t>());
  broadcast(bytes, root);
  return std::string(bytes.data<std::int32_t>(), bytes.data<std::int32_t>() + len);
}

void Communicator::wait_sends() {
  if (host_twin_) host_twin_->wait_sends();  // host tensors posted through it
  Timer timer(seconds_, "wait_sends", label_);
  do_wait_sends();
}

void Communicator::broadcast(Tensor& t, int root) {
  const char* op = "broadcast";
  if (Communicator* twin = twin_for({&t})) return twin->broadcast(t, root);
  if (staged(t)) {
    Tensor h = here(t);
    broadcast(h, root);
    return t.copy_from(h);
  }
  expect_here(op, t);
  expect_peer(op, root);
  if (size_ > 1) {
    Timer timer(seconds_, op, label_);
    do_broadcast(t, root);
  }
  if (rank_ == root) count(kBroadcast, u64(size_ - 1) * t.nbytes());
}

double Communicator::all_reduce_sum(double x) {
  Tensor t = Tensor::empty({1}, DType::f64);
  t.data<double>()[0] = x;
  if (takes(Device::cpu) || host_twin_) {
    all_reduce_sum(t);
    return t.data<double>()[0];
  }
  Tensor d = t.to(device());
  all_reduce_sum(d);
  return d.to(Device::cpu).data<double>()[0];
}

// A group of one has no peer to talk to (expect_peer lets only rank 0 through): sending to
// oneself would block forever with a real backend, so it is refused here too.
void SelfCommunicator::do_send(const Tensor&, int, int) {
  throw CommError("send: a group of one process has no peer to send to");
}
void SelfCommunicator::do_recv(Tensor&, int, int) {
  throw CommError("recv: a group of one process has no peer to receive from");
}

}  // namespace moe
