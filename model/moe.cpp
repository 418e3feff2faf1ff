#include "model/moe.h"

namespace moe {
namespace {
int ranks(const ExpertGroup& g) { return g.ep ? g.ep->size() : 1; }
}  // namespace

MoE::MoE(const ModelConfig& c, const std::string& p, const ExpertGroup& ep, const TensorParallel& tp, Gemm gemm)
    : C_(c.d_model),
      El_(c.routed_experts / ranks(ep)),
      tp_(tp),
      gemm_(gemm),
      router_(c, p, tp),
      dispatcher_(ep, c.routed_experts, gemm, replica_layout(c, ep).instances()),  // experts and replica slots
      experts_(p, (ep.ep ? ep.ep->rank() : 0) * El_, El_, c.routed_experts, c.d_model, c.expert_hidden, gemm) {
  MOE_CHECK(c.routed_experts % ranks(ep) == 0, ConfigError,
            "{}: {} routed experts cannot be split over {} expert-parallel ranks", p, c.routed_experts, ranks(ep));
  if (c.shared_experts > 0)
    shared_ = std::make_unique<SwiGLU>(C_, c.shared_experts * c.expert_hidden, p + "shared_experts.", tp, gemm);
  overlap_ = ep.overlap && shared_;
  if (ep.redundant > 0) replicas_ = std::make_unique<ExpertReplicas>(replica_layout(c, ep), ep.ep);
}

void MoE::set_replicas(std::vector<std::int32_t> slot_expert) {
  if (!replicas_) return;
  replicas_->assign(std::move(slot_expert), experts_.params()[0]->w.device());
  refresh_replicas();
}

void MoE::refresh_replicas() {
  if (!replicas_) return;
  if (experts_.replica_weights().empty()) experts_.add_replica_slots(replicas_->layout().slots);
  replicas_->refresh(experts_.params(), experts_.replica_weights());
}

void MoE::fold_replica_grads() {
  if (replicas_ && !experts_.replica_grads().empty()) replicas_->fold(experts_.params(), experts_.replica_grads());
}

void MoE::swap_saved(Saved& s) {
  SwiGLU::Saved incoming = std::move(s.shared);
  std::swap(saved_, s);
  if (shared_) shared_->swap_saved(incoming);
  s.shared = std::move(incoming);
}

ParamList MoE::params() {
  ParamList ps = {&router_.weight()};
  for (Param* q : experts_.params()) ps.push_back(q);
  if (shared_)
    for (Param* q : shared_->params()) ps.push_back(q);
  return ps;
}

void MoE::forward(Tensor& out, const Tensor& x, std::int64_t B, std::int64_t T, Tensor& aux_total) {
  const Device dev = x.device();
  const auto [n0, n1] = tp_.token_range(B * T);
  const PlanCounts counts = dispatcher_.counts(dev);
  Saved& s = saved_;
  s.routing = router_.forward(x, T, n0, n1, counts.routed(), aux_total);  // choices, capacity, balance loss
  Tensor kept = s.routing.kept, per_instance = counts.kept();
  if (replicas_) {  // each kept assignment to one instance of its expert
    if (experts_.replica_weights().empty()) refresh_replicas();
    kept = Tensor::empty(kept.shape(), DType::i32, dev);
    ops::pick_instances(kept, per_instance, s.routing.kept, replicas_->table(dev), router_.experts());
  }
  s.plan = std::make_shared<const DispatchPlan>(dispatcher_.plan(kept, counts));  // counts: the one copy back
  const DispatchPlan& plan = *s.plan;
  const GemmInput xin = gemm_.keep(x);  // each row quantised on its own: where does not change its bits
  s.gates_received = dispatcher_.dispatch_gates(s.routing.gates, plan);
  s.expert_out = Tensor::empty({plan.expert_rows(), C_}, DType::f32, dev);
  // The shared experts compute while the rows travel (their output and the rows are apart).
  PendingRows rows = dispatcher_.start_dispatch(xin, plan);
  GemmInput xe = overlap_ ? GemmInput() : dispatcher_.finish_dispatch(rows, plan);
  if (shared_) shared_->forward(out, xin);
  else out.zero();
  if (overlap_) xe = dispatcher_.finish_dispatch(rows, plan);
  experts_.forward(s.expert_out, xe, plan.offsets(), s.experts);
  dispatcher_.combine(out, s.expert_out, s.routing.gates, s.gates_received, plan);
  stats_ = plan.stats;
}

void MoE::backward(Tensor& dx, const Tensor& dout, const Tensor& x, double aux_scale) {
  const Saved& s = saved_;
  const DispatchPlan& plan = *s.plan;
  const Device dev = x.device();
  Tensor dye = Tensor::empty({plan.expert_rows(), C_}, DType::f32, dev),
         dxe = Tensor::empty(dye.shape(), DType::f32, dev);
  Tensor dgates = Tensor::empty(s.routing.gates.shape(), DType::f32, dev);
  // dout's rows travel while the shared experts' backward computes (it assigns dx first).
  PendingRows rows = dispatcher_.start_combine_backward(dout, plan);
  if (!overlap_) dispatcher_.finish_combine_backward(rows, dye, dgates, s.expert_out, s.gates_received.experts, plan);
  if (shared_) shared_->backward(dx, dout);
  else dx.zero();
  if (overlap_) dispatcher_.finish_combine_backward(rows, dye, dgates, s.expert_out, s.gates_received.experts, plan);
  experts_.backward(dxe, dye, plan.offsets(), plan.segments(), s.experts);
  dispatcher_.dispatch_backward(dx, dxe, plan);
  router_.backward(dx, dgates, x, s.routing, aux_scale);
}

}  // namespace moe
