// Causal GQA attention through cuDNN's fused SDPA (cudnn-frontend graph API): the GPU side of
// ops::attention_lse_forward / attention_lse_backward. cuDNN's flash kernels take BF16: q, k,
// v (and out, dout in backward) are rounded here, the softmax statistics (log-sum-exp of the
// scaled scores, our lse) stay FP32, and the results come back as f32. Our (B,T,H,D) tensors
// are cuDNN's (B,H,T,D) dimensions with strides (T*H*D, D, H*D, 1): no transposes.
// One graph per shape and direction, built once (cuDNN's plan search is slow).
// NOT YET RUN ON A GPU (written in a session without one): compiled against cudnn-frontend
// 1.32 and cuDNN 9 here; gpu test against the CPU in tests/cuda/test_cuda_ops.cpp.
#include <cudnn_frontend.h>
#include <fmt/format.h>

#include <cmath>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/error.h"

namespace moe::cuda {
namespace {
namespace fe = cudnn_frontend;

#define MOE_FE_CHECK(expr)                                                                                             \
  do {                                                                                                                 \
    auto moe_st_ = (expr);                                                                                             \
    if (!moe_st_.is_good())                                                                                            \
      throw ::moe::DeviceError(fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #expr, moe_st_.get_message())); \
  } while (0)

cudnnHandle_t handle() {
  static cudnnHandle_t h = [] {
    cudnnHandle_t x = nullptr;
    if (cudnnCreate(&x) != CUDNN_STATUS_SUCCESS) throw DeviceError("cudnnCreate failed (is libcudnn 9 installed?)");
    return x;
  }();
  return h;
}

enum Uid : std::int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

Scratch<std::uint16_t> bf16_of(const float* x, std::int64_t n) {
  Scratch<std::uint16_t> b(n);
  convert_bf16(b.p, x, n, true);
  return b;
}

using Key =
    std::tuple<std::int64_t, std::int64_t, std::int64_t, std::int64_t, std::int64_t, bool>;  // B,T,H,Hkv,D,backward

std::shared_ptr<fe::graph::Graph> graph_for(const Key& key) {
  static std::map<Key, std::shared_ptr<fe::graph::Graph>> cache;
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  const auto [B, T, H, Hkv, D, backward] = key;
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(fe::DataType_t::BFLOAT16)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  const auto dims = [&](std::int64_t heads) { return std::vector<std::int64_t>{B, heads, T, D}; };
  const auto strides = [&](std::int64_t heads) { return std::vector<std::int64_t>{T * heads * D, D, heads * D, 1}; };
  const auto input = [&](const char* name, Uid uid, std::int64_t heads) {
    return g->tensor(
        fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims(heads)).set_stride(strides(heads)));
  };
  const auto output = [&](const std::shared_ptr<fe::graph::Tensor_attributes>& t, Uid uid, std::int64_t heads) {
    t->set_output(true).set_uid(uid).set_dim(dims(heads)).set_stride(strides(heads));
  };
  const std::vector<std::int64_t> stats_dims{B, H, T, 1}, stats_strides{H * T, T, 1, 1};
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const auto Q = input("Q", kQ, H), K = input("K", kK, Hkv), V = input("V", kV, Hkv);
  if (!backward) {
    const auto opts =
        fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_causal_mask(true).set_attn_scale(
            scale);
    auto [O, stats] = g->sdpa(Q, K, V, opts);
    output(O, kO, H);
    stats->set_output(true)
        .set_uid(kStats)
        .set_data_type(fe::DataType_t::FLOAT)
        .set_dim(stats_dims)
        .set_stride(stats_strides);
  } else {
    const auto O = input("O", kO, H), dO = input("dO", kDO, H);
    const auto stats = g->tensor(fe::graph::Tensor_attributes()
                                     .set_name("Stats")
                                     .set_uid(kStats)
                                     .set_dim(stats_dims)
                                     .set_stride(stats_strides)
                                     .set_data_type(fe::DataType_t::FLOAT));
    const auto opts =
        fe::graph::SDPA_backward_attributes().set_name("sdpa_backward").set_causal_mask(true).set_attn_scale(scale);
    auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, stats, opts);
    output(dQ, kDQ, H);
    output(dK, kDK, Hkv);
    output(dV, kDV, Hkv);
  }
  MOE_FE_CHECK(g->validate());
  MOE_FE_CHECK(g->build_operation_graph(handle()));
  MOE_FE_CHECK(g->create_execution_plans({fe::HeurMode_t::A}));
  MOE_FE_CHECK(g->check_support(handle()));
  MOE_FE_CHECK(g->build_plans(handle()));
  cache.emplace(key, g);
  return g;
}

void run(const fe::graph::Graph& g, std::unordered_map<std::int64_t, void*>& pack) {
  std::int64_t bytes = 0;
  MOE_FE_CHECK(g.get_workspace_size(bytes));
  Scratch<std::uint8_t> workspace(bytes);
  MOE_FE_CHECK(g.execute(handle(), pack, workspace.p));  // the handle's stream: the default one
}
}  // namespace

void sdpa_forward(float* out, float* lse, const float* q, const float* k, const float* v, std::int64_t B,
                  std::int64_t T, std::int64_t H, std::int64_t Hkv, std::int64_t D) {
  const auto g = graph_for({B, T, H, Hkv, D, false});
  const std::int64_t nq = B * T * H * D, nk = B * T * Hkv * D;
  auto qb = bf16_of(q, nq), kb = bf16_of(k, nk), vb = bf16_of(v, nk);
  Scratch<std::uint16_t> ob(nq);
  std::unordered_map<std::int64_t, void*> pack{{kQ, qb.p}, {kK, kb.p}, {kV, vb.p}, {kO, ob.p}, {kStats, lse}};
  run(*g, pack);
  convert_bf16(out, ob.p, nq, false);
}

void sdpa_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, std::int64_t B, std::int64_t T, std::int64_t H, std::int64_t Hkv,
                   std::int64_t D) {
  const auto g = graph_for({B, T, H, Hkv, D, true});
  const std::int64_t nq = B * T * H * D, nk = B * T * Hkv * D;
  // out came from BF16 (forward widened it), so rounding it again gives forward's O exactly.
  auto qb = bf16_of(q, nq), kb = bf16_of(k, nk), vb = bf16_of(v, nk), ob = bf16_of(out, nq), dob = bf16_of(dout, nq);
  Scratch<std::uint16_t> dqb(nq), dkb(nk), dvb(nk);
  std::unordered_map<std::int64_t, void*> pack{{kQ, qb.p},   {kK, kb.p},   {kV, vb.p},
                                               {kO, ob.p},   {kDO, dob.p}, {kStats, const_cast<float*>(lse)},
                                               {kDQ, dqb.p}, {kDK, dkb.p}, {kDV, dvb.p}};
  run(*g, pack);
  convert_bf16(dq, dqb.p, nq, false);
  convert_bf16(dk, dkb.p, nk, false);
  convert_bf16(dv, dvb.p, nk, false);
}

}  // namespace moe::cuda
