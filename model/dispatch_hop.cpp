#include "model/dispatch_hop.h"

#include <algorithm>
#include <numeric>

namespace moe {
namespace {
Tensor i32(Shape s, Device d) { return Tensor::empty(std::move(s), DType::i32, d); }
Tensor f32(Shape s, Device d) { return Tensor::empty(std::move(s), DType::f32, d); }
std::int64_t sum(const std::vector<std::int64_t>& v) { return std::accumulate(v.begin(), v.end(), std::int64_t{0}); }
// t in dtype d (the BF16 wire: rows narrowed to BF16 to travel, widened back to f32).
Tensor converted(const Tensor& t, DType d) {
  Tensor out = Tensor::empty(t.shape(), d, t.device());
  ops::convert(out, t);
  return out;
}
}  // namespace

PlanCounts::PlanCounts(std::int64_t experts, std::int64_t ranks, Device d, std::int64_t instances)
    : E_(experts), I_(instances > 0 ? instances : experts), P_(ranks), all_(i32({base() + 2 * ranks + 1 + I_}, d)) {}

std::vector<std::int64_t> tile_segments(const std::vector<std::int64_t>& offsets, const std::int64_t* counts,
                                        std::int64_t sources) {
  const auto El = static_cast<std::int64_t>(offsets.size()) - 1;
  std::vector<std::int64_t> segments = offsets;
  for (std::int64_t l = 0; l < El; ++l) {
    std::int64_t end = offsets[std::size_t(l)];
    for (std::int64_t j = 0; j < sources; ++j) segments.push_back(end += counts[j * El + l]);
  }
  std::sort(segments.begin(), segments.end());
  segments.erase(std::unique(segments.begin(), segments.end()), segments.end());
  return segments;
}

DispatchHop::DispatchHop(Communicator* comm, std::int64_t experts, int ranks_per_node, Gemm gemm, bool summed_back)
    : comm_(comm && comm->size() > 1 ? comm : nullptr),
      rank_(comm_ ? comm_->rank() : 0),
      size_(comm_ ? comm_->size() : 1),
      per_node_(std::max(ranks_per_node, 1)),
      E_(experts),
      El_(experts / size_),
      gemm_(gemm),
      summed_back_(summed_back) {}

HopPlan DispatchHop::plan(const Tensor& kept, const PlanCounts& counts, Tensor* received) {
  const std::int64_t N = kept.size(0), K = kept.size(1), P = size_;
  const Device dev = kept.device();
  HopPlan p;
  // Rows: one per (token, rank) pair with a kept assignment there, rank-major, tokens in order.
  Tensor pairs = i32({N, P}, dev), fan_out = counts.fan_out(), send = counts.send_rows();
  p.rows = i32({N, P}, dev);
  ops::route_pairs(pairs, fan_out, kept, El_);
  Tensor rows_flat = p.rows.view({N * P});
  ops::counting_sort(rows_flat, send, pairs.view({N * P}), P);
  exchange_counts(counts);
  read_counts(p, counts);  // the one copy back
  Tensor meta = i32({p.sent, K}, dev);
  plan_tokens(p, kept, meta);
  const Tensor got = exchange(meta, p.send_rows, p.recv_rows);
  plan_experts(p, got, K);
  if (received) *received = got;
  return p;
}

// Per destination rank: how many rows, and how many assignments for each of its experts.
void DispatchHop::exchange_counts(const PlanCounts& counts) {
  if (!comm_) return;
  const auto P = static_cast<std::size_t>(size_);
  const std::vector<std::int64_t> one(P, 1), per_rank(P, El_);
  Tensor rows_in = counts.recv_rows(), kept_in = counts.recv_kept();
  comm_->all_to_all_v(rows_in, one, counts.send_rows(), one);
  comm_->all_to_all_v(kept_in, per_rank, counts.kept(), per_rank);
}

void DispatchHop::read_counts(HopPlan& p, const PlanCounts& counts) {
  const Tensor host = to_host(counts.all());
  const std::int32_t* c = host.data<std::int32_t>();
  const auto P = static_cast<std::size_t>(size_), E = static_cast<std::size_t>(counts.experts()),
             I = static_cast<std::size_t>(E_), El = static_cast<std::size_t>(El_);
  const std::int32_t *load = c, *routed_kept = c + E, *kept = c + counts.kept_at(), *send = c + counts.base(),
                     *recv = comm_ ? send + P + 1 : send, *kept_in = comm_ ? recv + P : kept;
  p.stats.load.assign(load, load + E);
  p.stats.kept.assign(kept, kept + I);
  p.send_rows.assign(send, send + P);
  p.recv_rows.assign(recv, recv + P);
  p.stats.fan_out = send[P];
  p.sent = sum(p.send_rows), p.received = sum(p.recv_rows);

  p.slots_in.assign(P, 0), p.slots_out.assign(P, 0);
  p.offsets.assign(El + 1, 0);
  for (std::size_t j = 0; j < P; ++j)
    for (std::size_t l = 0; l < El; ++l) {
      p.slots_in[j] += kept[j * El + l], p.slots_out[j] += kept_in[j * El + l];
      p.offsets[l + 1] += kept_in[j * El + l];
      if (static_cast<int>(j) != rank_) p.stats.remote_rows += kept[j * El + l];
    }
  for (std::size_t l = 0; l < El; ++l) p.offsets[l + 1] += p.offsets[l];
  p.expert_rows = p.offsets[El];
  p.kept_in.assign(kept_in, kept_in + P * El);
  p.segments = tile_segments(p.offsets, p.kept_in.data(), size_);
  // Every row carries at least one kept assignment, on both sides of the exchange.
  const std::int64_t kept_here = std::accumulate(kept, kept + I, std::int64_t{0});
  MOE_ASSERT(p.sent <= kept_here && p.received <= p.expert_rows,
             "rank {}: {} rows for {} kept assignments sent, {} rows "
             "for {} expert rows received",
             rank_, p.sent, kept_here, p.received, p.expert_rows);
  for (std::size_t e = 0; e < E; ++e) p.stats.dropped += load[e] - routed_kept[e];
  for (std::size_t j = 0; j < P; ++j) {
    if (static_cast<int>(j) != rank_) p.stats.remote_token_ranks += p.send_rows[j];
    if (other_node(j)) p.stats.inter_node_rows += p.send_rows[j];
  }
}

// The token side's lists: which token each sent row is, the metadata that goes with it (per
// slot the local expert at the destination, meta (S,K)), where each gate rides, and the rows
// the per-assignment way back brings (rank-major, then token, then slot).
void DispatchHop::plan_tokens(HopPlan& p, const Tensor& kept, Tensor& meta) {
  const std::int64_t N = kept.size(0), K = kept.size(1);
  const Device dev = kept.device();
  p.send_token = i32({p.sent}, dev);
  ops::invert_positions(p.send_token, p.rows.view({N * size_}), size_);
  p.gate_slot = i32({p.sent * K}, dev);
  ops::dispatch_slots(meta, p.gate_slot, kept, p.rows, El_);
  p.assignment_slot = i32({N * K}, dev);
  ops::invert_positions(p.assignment_slot, p.gate_slot);
  if (!per_assignment()) return;
  p.back_row = i32({N, K}, dev);
  Tensor none, back_flat = p.back_row.view({N * K});
  ops::counting_sort(back_flat, none, kept.view({N * K}), size_, El_);
}

// The expert side's lists, from the metadata received (R,K): each (row, slot) with a local
// expert lands in that expert's rows, experts in order, rows in arrival order (source rank,
// then token); and the per-assignment rows going back, in (row, slot) order.
void DispatchHop::plan_experts(HopPlan& p, const Tensor& meta, std::int64_t K) {
  const std::int64_t R = p.received, Me = p.expert_rows;
  const Device dev = meta.device();
  const Tensor meta_flat = meta.view({R * K});
  Tensor none;
  p.slot = i32({R, K}, dev);
  Tensor slot_flat = p.slot.view({R * K});
  ops::counting_sort(slot_flat, none, meta_flat, El_);
  p.expert_slot = i32({Me}, dev), p.expert_src = i32({Me}, dev);
  ops::invert_positions(p.expert_slot, slot_flat);
  ops::invert_positions(p.expert_src, slot_flat, K);
  if (!per_assignment()) return;
  const std::int64_t Rb = sum(p.slots_out);
  Tensor order = i32({R * K}, dev);
  p.back_slot = i32({Rb}, dev);
  ops::counting_sort(order, none, meta_flat, 1, El_);  // every local expert in one bin: (row, slot) order
  ops::invert_positions(p.back_slot, order);
  p.back_src = i32({Rb}, dev);
  Tensor back = p.back_src.view({Rb, 1});
  ops::gather_rows(back, slot_flat.view({R * K, 1}), p.back_slot);
}

PendingRows DispatchHop::start_deliver(const GemmInput& x, const HopPlan& p) {
  const GemmInput xs = x.gather(p.send_token);  // (S,C)
  bytes_ = inter_bytes_ = 0;
  if (p.sent > 0)
    for (std::size_t j = 0; j < p.send_rows.size(); ++j) {
      const std::uint64_t b = std::uint64_t(p.send_rows[j]) * (xs.bytes() / std::uint64_t(p.sent));
      if (static_cast<int>(j) != rank_) bytes_ += b;
      if (other_node(j)) inter_bytes_ += b;
    }
  return start(xs.x, xs.scale, p.send_rows, p.recv_rows);
}

PendingRows DispatchHop::start_deliver_wire(const Tensor& x, const HopPlan& p) {
  Tensor xs = f32({p.sent, x.size(1)}, x.device());
  ops::gather_rows(xs, x, p.send_token);
  if (!gemm_.bf16_wire()) return start(xs, Tensor(), p.send_rows, p.recv_rows);
  PendingRows r = start(converted(xs, DType::bf16), Tensor(), p.send_rows, p.recv_rows);
  r.widen = true;
  return r;
}

PendingRows DispatchHop::start(const Tensor& rows, const Tensor& scale, const std::vector<std::int64_t>& send,
                               const std::vector<std::int64_t>& recv) {
  PendingRows r;
  if (!comm_) {
    r.got = {rows, scale};
    return r;
  }
  const auto started = [&](PendingExchange& e, const Tensor& in) {
    Tensor out = Tensor::empty({sum(recv), in.size(1)}, in.dtype(), in.device());
    e = comm_->start_all_to_all_v(out, recv, in, send);
    return out;
  };
  r.got.x = started(r.rows, rows);
  if (scale.defined()) r.got.scale = started(r.scale, scale);
  return r;
}

GemmInput DispatchHop::finish_deliver(PendingRows& r) {
  r.rows.finish(), r.scale.finish();
  if (!r.widen) return r.got;
  return {converted(r.got.x, DType::f32), Tensor()};
}

Tensor DispatchHop::gates_in(const Tensor& gates, const HopPlan& p) {
  const std::int64_t N = gates.size(0), K = gates.size(1);
  Tensor gs = f32({p.sent * K, 1}, gates.device());
  ops::gather_rows(gs, gates.view({N * K, 1}), p.gate_slot);
  return exchange(gs.view({p.sent, K}), p.send_rows, p.recv_rows);  // (R,K)
}

Tensor DispatchHop::reduce_back(const Tensor& ye, const Tensor& gr, const HopPlan& p) {
  if (!per_assignment()) {
    Tensor yr = f32({p.received, ye.size(1)}, ye.device());  // each received row's sum over its local experts
    ops::combine_rows(yr, ye, p.slot, gr);
    return yr;
  }
  Tensor yb = f32({p.back_src.numel(), ye.size(1)}, ye.device());
  ops::gather_rows(yb, ye, p.back_src);
  return yb;
}

Tensor DispatchHop::return_rows(const Tensor& back, const HopPlan& p) {
  const std::vector<std::int64_t>&send = per_assignment() ? p.slots_out : p.recv_rows,
        &recv = per_assignment() ? p.slots_in : p.send_rows;
  const std::uint64_t row = std::uint64_t(back.size(1)) * (gemm_.bf16_wire() ? 2 : 4);
  back_inter_bytes_ = 0;
  for (std::size_t j = 0; j < send.size(); ++j)
    if (other_node(j)) back_inter_bytes_ += std::uint64_t(send[j]) * row;
  return exchange_wire(back, send, recv);
}

void DispatchHop::accumulate(Tensor& out, const Tensor& returned, const Tensor& gates, const HopPlan& p) {
  if (per_assignment()) ops::combine_rows(out, returned, p.back_row, gates, /*accumulate=*/true);
  else ops::combine_rows(out, returned, p.rows, Tensor(), /*accumulate=*/true);
}

Tensor DispatchHop::expert_grads(Tensor& dye, const Tensor& dr, const Tensor& ye, const Tensor& gr, const HopPlan& p) {
  const Device dev = dr.device();
  const std::int64_t K = gr.size(1), R = p.received, Me = p.expert_rows;
  // dy = gate * dout per expert row; dgate = <dout, y>, y as the token received it (BF16
  // under the per-assignment way back).
  Tensor w = f32({Me, 1}, dev);
  ops::gather_rows(w, gr.view({R * K, 1}), p.expert_slot);
  ops::combine_rows(dye, dr, p.expert_src.view({Me, 1}), w);
  Tensor y_sent = ye;
  if (per_assignment() && Me > 0) y_sent = converted(converted(ye, DType::bf16), DType::f32);
  Tensor dots = f32({Me, 1}, dev), dgr = f32({R, K}, dev);
  Tensor dots_flat = dots.view({Me}), dgr_flat = dgr.view({R * K, 1});
  ops::row_dot(dots_flat, dr, p.expert_src, y_sent);
  ops::gather_rows(dgr_flat, dots, p.slot.view({R * K}));
  return dgr;
}

void DispatchHop::gates_out(Tensor& dgates, const Tensor& dgr, const HopPlan& p) {
  const std::int64_t K = dgr.size(1);
  const Tensor dgs = exchange(dgr, p.recv_rows, p.send_rows);  // (S,K), back to the tokens
  Tensor dg_flat = dgates.view({dgates.numel(), 1});
  ops::gather_rows(dg_flat, dgs.view({p.sent * K, 1}), p.assignment_slot);
}

Tensor DispatchHop::exchange(const Tensor& rows, const std::vector<std::int64_t>& send,
                             const std::vector<std::int64_t>& recv) {
  if (!comm_) return rows;
  Tensor out = Tensor::empty({sum(recv), rows.size(1)}, rows.dtype(), rows.device());
  comm_->all_to_all_v(out, recv, rows, send);
  return out;
}

Tensor DispatchHop::exchange_wire(const Tensor& rows, const std::vector<std::int64_t>& send,
                                  const std::vector<std::int64_t>& recv) {
  if (!gemm_.bf16_wire()) return exchange(rows, send, recv);
  return converted(exchange(converted(rows, DType::bf16), send, recv), DType::f32);
}

}  // namespace moe
