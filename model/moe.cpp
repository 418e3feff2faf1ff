#include "model/moe.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <tuple>

#include "model/router.h"

namespace moe {

MoE::MoE(const ModelConfig& c, const std::string& p, Communicator* ep, const TensorParallel& tp, Gemm gemm)
    : C_(c.d_model), E_(c.routed_experts), K_(c.top_k), H_(c.expert_hidden), ep_(ep), tp_(tp), gemm_(gemm),
      ep_rank_(ep ? ep->rank() : 0), ep_size_(ep ? ep->size() : 1), El_(E_ / ep_size_),
      spec_{.kind = c.router == RouterType::sigmoid ? ops::RouterKind::sigmoid : ops::RouterKind::softmax,
            .top_k = static_cast<int>(c.top_k), .n_groups = static_cast<int>(c.n_groups),
            .topk_groups = static_cast<int>(c.topk_groups), .normalize = c.router_normalize,
            .scaling = c.routed_scaling_factor},
      capacity_factor_(c.capacity_factor), aux_coef_(c.aux_loss_coef),
      router_(p + "gate.weight", {E_, C_}), bias_name_(p + "gate.e_score_correction_bias"),
      bias_(Tensor::zeros({E_}, DType::f32)),
      // One 3-D tensor per projection; expert j's slice is HF's mlp.experts.{j}.*_proj.weight.
      gate_(p + "experts.gate_proj.weight", {El_, H_, C_}), up_(p + "experts.up_proj.weight", {El_, H_, C_}),
      down_(p + "experts.down_proj.weight", {El_, C_, H_}), load_(static_cast<std::size_t>(E_)) {
  MOE_CHECK(E_ % ep_size_ == 0, ConfigError, "{}: {} routed experts cannot be split over {} expert-parallel ranks", p,
            E_, ep_size_);
  for (Param* q : {&gate_, &up_, &down_}) q->expert_begin = ep_rank_ * El_, q->experts_total = E_;
  tp.replicate(router_, /*partial_grad=*/true);
  if (c.shared_experts > 0) shared_ = std::make_unique<SwiGLU>(C_, c.shared_experts * H_, p + "shared_experts.", tp, gemm);
}

void MoE::swap_saved(Saved& s) {
  for (auto [a, b] : {std::pair{&scores, &s.scores}, {&index, &s.index}, {&gates, &s.gates}, {&ge, &s.ge},
                      {&ue, &s.ue}, {&ye, &s.ye}, {&gr_, &s.gr}, {&index_host_, &s.index_host}})
    std::swap(*a, *b);
  std::swap(xe, s.xe), std::swap(he, s.he);
  for (auto [a, b] : {std::pair{&pos_, &s.pos}, {&row_of_, &s.row_of}, {&send_rows_, &s.send_rows},
                      {&recv_rows_, &s.recv_rows}, {&local_offsets_, &s.local_offsets}, {&segments_, &s.segments},
                      {&slot_, &s.slot}, {&slot_row_, &s.slot_row}, {&slots_in_, &s.slots_in}, {&slots_out_, &s.slots_out}})
    std::swap(*a, *b);
  for (auto [a, b] : {std::pair{&send_rows_total_, &s.send_rows_total}, {&recv_rows_total_, &s.recv_rows_total},
                      {&T_, &s.T}, {&n0_, &s.n0}, {&n1_, &s.n1}})
    std::swap(*a, *b);
  std::swap(f_, s.f);
  if (shared_) shared_->swap_saved(s.shared);
}

ParamList MoE::params() {
  ParamList ps = {&router_, &gate_, &up_, &down_};
  if (shared_)
    for (Param* q : shared_->params()) ps.push_back(q);
  return ps;
}

void MoE::SumList::add(std::int64_t row, std::int64_t src, std::int64_t widx) {
  MOE_CHECK(row >= std::ssize(offsets_) - 1 && row < rows_, ShapeError, "MoE: combine row {} out of order", row);
  while (std::ssize(offsets_) <= row) offsets_.push_back(static_cast<std::int32_t>(src_.size()));
  src_.push_back(static_cast<std::int32_t>(src));
  widx_.push_back(static_cast<std::int32_t>(widx));
}

ops::RowSums MoE::SumList::sums() {
  while (std::ssize(offsets_) <= rows_) offsets_.push_back(static_cast<std::int32_t>(src_.size()));
  return {offsets_, src_, widx_};
}

std::vector<std::int32_t> MoE::send_sources(std::int64_t N) const {
  std::vector<std::int32_t> src(static_cast<std::size_t>(send_rows_total_));
  for_each_row(N, [&](std::int64_t n, std::int64_t r) { src[std::size_t(r)] = static_cast<std::int32_t>(n); });
  return src;
}

MoE::SumList MoE::token_rows(std::int64_t N) const {
  SumList l(N);
  for_each_row(N, [&](std::int64_t n, std::int64_t r) { l.add(n, r); });
  return l;
}

MoE::SumList MoE::token_slots(std::int64_t N) const {
  SumList l(N);
  for_each_assignment([&](std::int64_t a, std::int64_t row) { l.add(a / K_, row, a); });
  return l;
}

MoE::SumList MoE::slot_sums() const {
  SumList l(recv_rows_total_);
  for_each_slot([&](std::int64_t r, std::int64_t k, std::int64_t sl) { l.add(r, sl, r * K_ + k); });
  return l;
}

MoE::SumList MoE::expert_sources() const {
  std::vector<std::int64_t> row(static_cast<std::size_t>(local_offsets_[El_])), gate(row.size());
  for_each_slot([&](std::int64_t r, std::int64_t k, std::int64_t sl) { row[std::size_t(sl)] = r, gate[std::size_t(sl)] = r * K_ + k; });
  SumList l(std::ssize(row));
  for (std::size_t sl = 0; sl < row.size(); ++sl) l.add(std::int64_t(sl), row[sl], gate[sl]);
  return l;
}

double MoE::forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T) {
  const std::int64_t N = x.size(0);
  const Device dev = x.device();
  T_ = T;
  std::tie(n0_, n1_) = tp_.token_range(N);
  if (bias_.device() != dev) bias_ = bias_.to(dev);
  // Route: logits (N,E) -> scores, index (N,K), gates (N,K). The plan below is made on the
  // host from the choices; the rows move by ops on x's device.
  Tensor logits = Tensor::empty({N, E_}, DType::f32, dev);
  ops::matmul_forward(logits, x, router_.w);
  scores = Tensor::empty({N, E_}, DType::f32, dev);
  index = Tensor::empty({N, K_}, DType::i32, dev);
  gates = Tensor::empty({N, K_}, DType::f32, dev);
  ops::router_forward(scores, index, gates, logits, bias_, spec_);
  index_host_ = to_host(index);  // the one copy back of the forward: the plan is made from it
  const std::int32_t* idx = index_host_.data<std::int32_t>();

  // Capacity, in token order (routing::apply_capacity).
  routing::Kept kept = routing::apply_capacity(idx, N, K_, E_, capacity_factor_, n0_, n1_);
  pos_ = std::move(kept.pos), load_ = std::move(kept.load), dropped_ = kept.dropped;

  // Dispatch: one row per (token, rank holding at least one of its kept experts), sent
  // with, per top-k slot, the local expert it feeds there and its gate. The experts run on
  // the rows they received as one grouped GEMM; each rank sums the gated outputs of a row's
  // experts and sends one row back; the token adds the rows of its ranks.
  plan_rows(N);
  const auto p = static_cast<std::size_t>(ep_size_);
  const std::int64_t sent = send_rows_total_;
  // The rows go in the experts' GEMM input form (E4M3 codes and scales under fp8): each row
  // is quantised on its own, so where it is quantised does not change its bits.
  const GemmInput xin = gemm_.keep(x);
  const GemmInput xs = xin.gather(send_sources(N));
  // Routing metadata, made on the host: per sent row and top-k slot, the local expert it
  // feeds there (-1: none). The gates travel beside it on the device, (sent, K), 0 where -1.
  Tensor ms = Tensor::empty({sent, K_}, DType::i32);
  SumList gate_of(sent * K_);  // gs[r, k] <- gates[a]
  {
    std::int32_t* m = ms.data<std::int32_t>();
    std::fill_n(m, sent * K_, -1);
    std::vector<std::int64_t> slot_gate(static_cast<std::size_t>(sent * K_), -1);
    for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a) {
      if (pos_[a] < 0) continue;
      const std::int64_t j = idx[a] / El_, r = row_of_[std::size_t(a / K_) * p + std::size_t(j)];
      m[r * K_ + a % K_] = static_cast<std::int32_t>(idx[a] - j * El_);
      slot_gate[std::size_t(r * K_ + a % K_)] = a;
    }
    for (std::int64_t i = 0; i < sent * K_; ++i)
      if (slot_gate[std::size_t(i)] >= 0) gate_of.add(i, slot_gate[std::size_t(i)]);
  }
  Tensor gs = Tensor::empty({sent, K_}, DType::f32, dev);
  Tensor gs_flat = gs.view({sent * K_, 1});
  ops::gather_sum(gs_flat, gates.view({N * K_, 1}), gate_of.sums());
  exchange_counts();
  const GemmInput xr = exchange(xs);
  plan_experts(to_host(exchange(ms, false)));
  const std::int64_t R = recv_rows_total_, Me = local_offsets_[El_];
  gr_ = exchange(gs, false);  // (R, K)
  xe = xr.gather(expert_sources().sources());
  ge = Tensor::empty({Me, H_}, DType::f32, dev);
  ue = Tensor::empty({Me, H_}, DType::f32, dev);
  Tensor h = Tensor::empty({Me, H_}, DType::f32, dev);
  ye = Tensor::empty({Me, C_}, DType::f32, dev);
  gemm_.grouped_forward(ge, xe, gate_.w, local_offsets_);
  gemm_.grouped_forward(ue, xe, up_.w, local_offsets_);
  ops::swiglu_forward(h, ge, ue);
  he = gemm_.keep(h);
  gemm_.grouped_forward(ye, he, down_.w, local_offsets_);

  // Combine. FP32: yr = sum over the row's experts of gate * y, one row back per (token,
  // rank). BF16 wire (bf16, fp8): each kept assignment's expert output goes back on its own
  // and the token applies the gates in top-k order, so no rounding depends on how the
  // experts are spread over ranks.
  if (shared_) shared_->forward(out, xin);
  else out.zero();
  if (!slot_combine()) {
    Tensor yr = Tensor::empty({R, C_}, DType::f32, dev);
    ops::gather_sum(yr, ye, slot_sums().sums(), gr_);
    ops::gather_sum(out, exchange(yr, true), token_rows(N).sums(), Tensor(), /*accumulate=*/true);
  } else {
    const Tensor ys = exchange_wire(slot_rows(ye), slots_out_, slots_in_);
    ops::gather_sum(out, ys, token_slots(N).sums(), gates, /*accumulate=*/true);
  }

  // Sequence-wise balance loss (routing::balance_loss), from the scores' host copy.
  if (aux_coef_ == 0 || tp_.rank != 0) return 0.0;  // tp ranks share the routing: one counts it
  return routing::balance_loss(f_, to_host(scores), idx, B, T, K_, aux_coef_);
}

void MoE::backward(Tensor& dx, const Tensor& dout, const Tensor& x, double aux_scale) {
  const std::int64_t N = x.size(0), sent = send_rows_total_, R = recv_rows_total_, Me = local_offsets_[El_];
  const Device dev = x.device();
  const auto p = static_cast<std::size_t>(ep_size_);
  if (shared_) shared_->backward(dx, dout);
  else dx.zero();

  // The output gradient of each row travels like the dispatch: dout of its token.
  Tensor ds = Tensor::empty({sent, C_}, DType::f32, dev);
  ops::gather_rows(ds, dout, send_sources(N));
  const Tensor dr = exchange_wire(ds, send_rows_, recv_rows_);  // BF16 under bf16 / fp8: each token's own rows
  // Where the experts live: dy = gate * dout per expert row; dgate = <dout, y>, with y as
  // the token received it (BF16 under the per-assignment combine).
  Tensor dye = Tensor::empty({Me, C_}, DType::f32, dev), dgr = Tensor::empty({R, K_}, DType::f32, dev);
  Tensor y_sent = ye;
  if (slot_combine() && Me > 0) {
    Tensor b = Tensor::empty(ye.shape(), DType::bf16, dev);
    ops::convert(b, ye);
    y_sent = Tensor::empty(ye.shape(), DType::f32, dev);
    ops::convert(y_sent, b);
  }
  {
    SumList from = expert_sources();
    ops::gather_sum(dye, dr, from.sums(), gr_);
    std::vector<std::int32_t> own(static_cast<std::size_t>(Me));
    std::iota(own.begin(), own.end(), 0);
    Tensor dots = Tensor::empty({Me}, DType::f32, dev);
    ops::row_dot(dots, dr, from.sources(), y_sent, own);
    SumList to(R * K_);  // dots[sl] -> dgr[r, k]
    for_each_slot([&](std::int64_t r, std::int64_t k, std::int64_t sl) { to.add(r * K_ + k, sl); });
    Tensor dgr_flat = dgr.view({R * K_, 1});
    ops::gather_sum(dgr_flat, dots.view({Me, 1}), to.sums());
  }
  Tensor dhe = Tensor::empty({Me, H_}, DType::f32, dev), dge = Tensor::empty({Me, H_}, DType::f32, dev),
         due = Tensor::empty({Me, H_}, DType::f32, dev), dxe = Tensor::empty({Me, C_}, DType::f32, dev),
         tmp = Tensor::empty({Me, C_}, DType::f32, dev);
  gemm_.grouped_backward(dhe, down_.g, dye, he, down_.w, local_offsets_, segments_);
  ops::swiglu_backward(dge, due, dhe, ge, ue);
  gemm_.grouped_backward(dxe, gate_.g, dge, xe, gate_.w, local_offsets_, segments_);
  gemm_.grouped_backward(tmp, up_.g, due, xe, up_.w, local_offsets_, segments_);
  ops::accumulate(dxe, tmp);
  // Input gradients go back as the combine did (summed per row, or one per assignment), with
  // the gate gradients; tokens add them.
  if (!slot_combine()) {
    Tensor dx_rows = Tensor::empty({R, C_}, DType::f32, dev);
    ops::gather_sum(dx_rows, dxe, slot_sums().sums());
    ops::gather_sum(dx, exchange(dx_rows, true), token_rows(N).sums(), Tensor(), /*accumulate=*/true);
  } else {
    const Tensor dxs = exchange_wire(slot_rows(dxe), slots_out_, slots_in_);
    ops::gather_sum(dx, dxs, token_slots(N).sums(), Tensor(), /*accumulate=*/true);
  }
  const Tensor dgs = exchange(dgr, true);
  Tensor dgates = Tensor::empty({N, K_}, DType::f32, dev);
  {
    const std::int32_t* idx = index_host_.data<std::int32_t>();
    SumList pick(N * K_);  // each kept assignment's gate gradient from the row its rank sent back
    for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a)
      if (pos_[a] >= 0) pick.add(a, row_of_[std::size_t(a / K_) * p + std::size_t(idx[a] / El_)] * K_ + a % K_);
    Tensor flat = dgates.view({N * K_, 1});
    ops::gather_sum(flat, dgs.view({dgs.size(0) * K_, 1}), pick.sums());
  }

  // Balance loss backward: dL/ds'_e = coef * f_e / T per token; s' = s / sum(s).
  Tensor dscores;
  if (aux_coef_ != 0 && aux_scale != 0 && tp_.rank == 0) {
    dscores = routing::balance_loss_grad(f_, to_host(scores), T_, aux_coef_, aux_scale);
    if (dev != Device::cpu) dscores = dscores.to(dev);
  }

  // Router backward: gates (and balance loss) -> logits -> x and the router weight.
  Tensor dlogits = Tensor::empty({N, E_}, DType::f32, dev), dxr = Tensor::empty({N, C_}, DType::f32, dev);
  ops::router_backward(dlogits, dgates, scores, index, spec_, dscores);
  ops::matmul_backward(dxr, router_.g, dlogits, x, router_.w);
  ops::accumulate(dx, dxr);
}

// Which rows this rank sends: one per (token, rank) pair with a kept assignment, grouped by
// destination rank, tokens in order within each. Also the routing statistics.
void MoE::plan_rows(std::int64_t N) {
  const auto p = static_cast<std::size_t>(ep_size_);
  const std::int32_t* idx = index_host_.data<std::int32_t>();
  row_of_.assign(std::size_t(N) * p, 0);
  for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a)
    if (pos_[a] >= 0) row_of_[std::size_t(a / K_) * p + std::size_t(idx[a] / El_)] = 1;  // reached
  send_rows_.assign(p, 0);
  max_ranks_ = 1;
  remote_rows_ = remote_token_ranks_ = 0;
  for (std::int64_t n = 0; n < N; ++n) {
    int reached = 0;
    for (std::size_t j = 0; j < p; ++j) {
      reached += static_cast<int>(row_of_[std::size_t(n) * p + j]);
      send_rows_[j] += row_of_[std::size_t(n) * p + j];
      if (static_cast<int>(j) != ep_rank_) remote_token_ranks_ += row_of_[std::size_t(n) * p + j];
    }
    max_ranks_ = std::max(max_ranks_, std::max(reached, 1));
  }
  for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a) remote_rows_ += pos_[a] >= 0 && idx[a] / El_ != ep_rank_;
  // Row numbers: rank-major, then token order.
  std::vector<std::int64_t> next(p, 0);
  for (std::size_t j = 1; j < p; ++j) next[j] = next[j - 1] + send_rows_[j - 1];
  send_rows_total_ = p ? next[p - 1] + send_rows_[p - 1] : 0;
  for (std::int64_t n = 0; n < N; ++n)
    for (std::size_t j = 0; j < p; ++j) {
      auto& r = row_of_[std::size_t(n) * p + j];
      r = r ? next[j]++ : -1;
    }
  // Per-assignment combine rows coming back: rank-major, then token, then top-k slot (the
  // order the expert side sends them: its received rows in order, each row's slots in order).
  slots_in_.assign(p, 0);
  for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a)
    if (pos_[a] >= 0) ++slots_in_[std::size_t(idx[a] / El_)];
  std::fill(next.begin(), next.end(), 0);
  for (std::size_t j = 1; j < p; ++j) next[j] = next[j - 1] + slots_in_[j - 1];
  slot_row_.assign(static_cast<std::size_t>(N * K_), -1);
  for (std::int64_t a = n0_ * K_; a < n1_ * K_; ++a)
    if (pos_[a] >= 0) slot_row_[std::size_t(a)] = next[std::size_t(idx[a] / El_)]++;
}

// Counts first: how many rows each rank receives from each other rank.
void MoE::exchange_counts() {
  const auto p = static_cast<std::size_t>(ep_size_);
  recv_rows_ = send_rows_;
  if (ep_size_ > 1) {
    Tensor mine = Tensor::empty({ep_size_}, DType::i32), got = Tensor::empty({ep_size_}, DType::i32);
    for (std::size_t j = 0; j < p; ++j) mine.data<std::int32_t>()[j] = static_cast<std::int32_t>(send_rows_[j]);
    const std::vector<std::int64_t> one(p, 1);
    ep_->all_to_all_v(got, one, mine, one);
    for (std::size_t j = 0; j < p; ++j) recv_rows_[j] = got.data<std::int32_t>()[j];
  }
  recv_rows_total_ = 0;
  for (auto r : recv_rows_) recv_rows_total_ += r;
}

// Rows out to the ranks that hold the experts (back = false) or back to the tokens' ranks.
Tensor MoE::exchange(const Tensor& rows, bool back) {
  return back ? exchange(rows, recv_rows_, send_rows_) : exchange(rows, send_rows_, recv_rows_);
}

Tensor MoE::exchange(const Tensor& rows, const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv) {
  if (ep_size_ == 1) return rows;
  std::int64_t total = 0;
  for (auto r : recv) total += r;
  Tensor out = Tensor::empty({total, rows.size(1)}, rows.dtype(), rows.device());
  ep_->all_to_all_v(out, recv, rows, send);
  return out;
}

Tensor MoE::slot_rows(const Tensor& expert_rows) const {
  std::vector<std::int32_t> src;
  for_each_slot([&](std::int64_t, std::int64_t, std::int64_t sl) { src.push_back(static_cast<std::int32_t>(sl)); });
  Tensor out = Tensor::empty({std::ssize(src), C_}, DType::f32, expert_rows.device());
  ops::gather_rows(out, expert_rows, src);
  return out;
}

GemmInput MoE::exchange(const GemmInput& rows) {
  const auto sent = [&] {
    if (!ep_) return std::uint64_t{0};
    const auto b = ep_->bytes_sent();
    const auto it = b.find("all_to_all");
    return it == b.end() ? std::uint64_t{0} : it->second;
  };
  const std::uint64_t before = sent();
  GemmInput out{exchange(rows.x, false), rows.scale.defined() ? exchange(rows.scale, false) : Tensor()};
  dispatch_bytes_ = sent() - before;
  return out;
}

Tensor MoE::exchange_wire(const Tensor& rows, const std::vector<std::int64_t>& send, const std::vector<std::int64_t>& recv) {
  if (!gemm_.bf16_wire()) return exchange(rows, send, recv);
  Tensor b = Tensor::empty(rows.shape(), DType::bf16, rows.device());
  ops::convert(b, rows);
  const Tensor got = exchange(b, send, recv);
  Tensor out = Tensor::empty(got.shape(), DType::f32, got.device());
  ops::convert(out, got);
  return out;
}

// Where each received (row, slot) goes among the local experts' rows: expert-major, then in
// arrival order (source rank, then token).
void MoE::plan_experts(const Tensor& meta) {
  const std::int64_t R = recv_rows_total_;
  const std::int32_t* m = meta.data<std::int32_t>();
  local_offsets_.assign(static_cast<std::size_t>(El_ + 1), 0);
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t k = 0; k < K_; ++k)
      if (const std::int32_t l = m[r * K_ + k]; l >= 0) ++local_offsets_[static_cast<std::size_t>(l) + 1];
  for (std::int64_t l = 0; l < El_; ++l) local_offsets_[l + 1] += local_offsets_[l];
  std::vector<std::int64_t> next(local_offsets_.begin(), local_offsets_.end() - 1);
  slot_.assign(static_cast<std::size_t>(R * K_), -1);
  // Rows arrive source rank by source rank: an expert's segment ends where its rows from one
  // source do.
  segments_.assign(local_offsets_.begin(), local_offsets_.end());
  slots_out_.assign(recv_rows_.size(), 0);
  std::int64_t r = 0;
  for (std::size_t j = 0; j < recv_rows_.size(); ++j) {
    for (const std::int64_t end = r + recv_rows_[j]; r < end; ++r)
      for (std::int64_t k = 0; k < K_; ++k)
        if (const std::int32_t l = m[r * K_ + k]; l >= 0)
          slot_[std::size_t(r * K_ + k)] = next[static_cast<std::size_t>(l)]++, ++slots_out_[j];
    segments_.insert(segments_.end(), next.begin(), next.end());
  }
  std::sort(segments_.begin(), segments_.end());
  segments_.erase(std::unique(segments_.begin(), segments_.end()), segments_.end());
}

void MoE::update_bias(const std::vector<double>& global_load, double rate) {
  double mean = 0;
  for (double l : global_load) mean += l / double(E_);
  // b += float(rate) * sign on b's device (the sign exact in f32, so float(rate * sign)):
  // the signs go over, nothing comes back.
  Tensor sign = Tensor::empty({E_}, DType::f32);
  for (std::int64_t e = 0; e < E_; ++e) {
    const double diff = mean - global_load[static_cast<std::size_t>(e)];
    sign.data<float>()[e] = static_cast<float>((diff > 0) - (diff < 0));
  }
  ops::accumulate(bias_, sign.device() == bias_.device() ? sign : sign.to(bias_.device()), rate);
}

}  // namespace moe
