#include "model/lora.h"

#include <algorithm>
#include <memory>

#include "kernels/ops.h"
#include "model/linear.h"
#include "model/transformer.h"

namespace moe {
namespace {
const std::string kWeight = ".weight";
// A factor as (G, rows, cols): routed experts already are; a plain matrix is one group.
Tensor grouped(const Tensor& t) { return !t.defined() || t.ndim() == 3 ? t : t.view({1, t.size(0), t.size(1)}); }
}  // namespace

const std::vector<std::string>& lora_projections() {
  static const std::vector<std::string> names = {
      "q_proj",    "k_proj",    "v_proj",  "o_proj",    "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa",
      "kv_b_proj", "gate_proj", "up_proj", "down_proj", "eh_proj"};
  return names;
}

std::string module_name(const std::string& param_name) {
  const bool weight = param_name.size() > kWeight.size() &&
                      param_name.compare(param_name.size() - kWeight.size(), kWeight.size(), kWeight) == 0;
  return weight ? param_name.substr(0, param_name.size() - kWeight.size()) : param_name;
}

bool lora_target_matches(const std::string& target, const std::string& param_name) {
  const std::string module = module_name(param_name);
  const std::string leaf = module.substr(module.rfind('.') + 1);
  const auto& known = lora_projections();
  if (module == param_name || std::find(known.begin(), known.end(), leaf) == known.end()) return false;
  if (target == "all-linear") return true;
  return module == target ||
         (module.size() > target.size() && module.compare(module.size() - target.size(), target.size(), target) == 0 &&
          module[module.size() - target.size() - 1] == '.');
}

std::shared_ptr<LoraAdapter> make_lora(const Param& base, const LoraConfig& c, const TensorParallel& tp) {
  const Shape& w = base.shape();  // (N,K) or (El,N,K): this rank's
  const bool experts = base.is_expert();
  const std::int64_t r = c.rank, N = w[w.size() - 2], K = w.back();
  const std::string module = module_name(base.name);
  Shape a_shape = {r, K}, b_shape = {N, r};
  if (experts) a_shape.insert(a_shape.begin(), w[0]), b_shape.insert(b_shape.begin(), w[0]);
  auto ad = std::make_shared<LoraAdapter>(
      LoraAdapter{Param(module + ".lora_A.weight", a_shape), Param(module + ".lora_B.weight", b_shape), lora_scale(c)});
  ad->a.init = Param::Init::kaiming_uniform;  // PEFT's default
  ad->b.init = Param::Init::zeros;
  for (Param* p : {&ad->a, &ad->b}) p->expert_begin = base.expert_begin, p->experts_total = base.experts_total;
  if (base.is_split()) {
    const bool columns = base.split_dim == int(w.size()) - 2;  // N split (column-parallel)
    if (columns) tp.split(ad->b, base.split_dim, base.split_full), tp.replicate(ad->a, /*partial_grad=*/true);
    else tp.split(ad->a, base.split_dim, base.split_full), tp.replicate(ad->b, /*partial_grad=*/true);
  } else {
    for (Param* p : {&ad->a, &ad->b}) p->tp_replicated = base.tp_replicated, p->tp_partial = base.tp_partial;
  }
  return ad;
}

std::vector<LoraSite> lora_sites(const ModelConfig& m) {
  if (m.lora.rank == 0) return {};
  const Param::ShapesOnly no_storage;
  Transformer model(m);
  std::vector<LoraSite> out;
  const std::string layers = "model.layers.";
  for (Param* p : model.params()) {
    if (!p->lora) continue;
    const std::string module = module_name(p->name), leaf = module.substr(module.rfind('.') + 1);
    const Shape& w = p->shape();
    const std::int64_t layer = std::stoll(p->name.substr(layers.size()));
    // Column-parallel: q, k, v, q_b, kv_b, gate, up; row-parallel: o, down; whole: the MLA
    // latents, eh_proj and routed experts (model/tensor_parallel.h).
    const bool rows = leaf == "o_proj" || leaf == "down_proj";
    const bool whole = p->is_expert() || leaf == "q_a_proj" || leaf == "kv_a_proj_with_mqa" || leaf == "eh_proj";
    out.push_back({layer, w[w.size() - 2], w.back(), p->is_expert() ? w[0] : 0,
                   whole  ? LoraSite::Split::none
                   : rows ? LoraSite::Split::rows
                          : LoraSite::Split::columns,
                   leaf != "eh_proj"});
  }
  return out;
}

Tensor lora_merged(const Tensor& w, const Tensor& a, const Tensor& b, double scale) {
  const Tensor w3 = grouped(w), a3 = grouped(a), b3 = grouped(b);
  const std::int64_t G = w3.size(0), N = w3.size(1), K = w3.size(2), r = a3.size(1);
  MOE_CHECK(a3.shape() == Shape({G, r, K}) && b3.shape() == Shape({G, N, r}), ShapeError,
            "lora_merged: w {}, a {}, b {} are not (N,K), (r,K), (N,r) (per expert: with a leading E)", w.describe(),
            a.describe(), b.describe());
  Tensor out = Tensor::empty(w.shape(), DType::f32), at = Tensor::empty({K, r}, DType::f32),
         update = Tensor::empty({N, K}, DType::f32);
  out.copy_from(w);
  for (std::int64_t g = 0; g < G; ++g) {
    const float* ap = a3.data<float>() + g * r * K;
    for (std::int64_t i = 0; i < r; ++i)
      for (std::int64_t k = 0; k < K; ++k) at.data<float>()[k * r + i] = ap[i * K + k];
    ops::matmul_forward(update, b3.rows(g, 1).view({N, r}), at);  // (N,K) = B A
    Tensor wg = grouped(out).rows(g, 1).view({N, K});
    ops::accumulate(wg, update, scale);
  }
  return out;
}

namespace {
// s x A^T (M,r), per group, in the GEMM's precision; `like`: the output's dtype and device.
Tensor scaled_down(const Gemm& gemm, const GemmInput& x, const LoraAdapter& ad, std::span<const std::int64_t> offsets,
                   const Tensor& like) {
  const Tensor a = grouped(ad.a.w);
  Tensor xa = Tensor::empty({x.rows(), a.size(1)}, like.dtype(), like.device());
  gemm.grouped_forward(xa, x, a, offsets);
  ops::scale(xa, ad.scale);
  return xa;
}
}  // namespace

void lora_forward(const Gemm& gemm, Tensor& y, const GemmInput& x, const LoraAdapter& ad,
                  std::span<const std::int64_t> offsets) {
  const Tensor xa = scaled_down(gemm, x, ad, offsets, y);
  Tensor up = Tensor::empty(y.shape(), y.dtype(), y.device());
  ops::grouped_matmul_forward(up, xa, grouped(ad.b.w), offsets);  // (M,N) = (s x A^T) B^T
  ops::accumulate(y, up);
}

void lora_backward(const Gemm& gemm, Tensor& dx, const Tensor& dy, const GemmInput& x, LoraAdapter& ad,
                   std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments) {
  const Tensor xa = scaled_down(gemm, x, ad, offsets, dy);
  const Tensor a = grouped(ad.a.w);
  Tensor dxa = Tensor::empty({dy.size(0), a.size(1)}, dy.dtype(), dy.device()), db = grouped(ad.b.g),
         da = grouped(ad.a.g);
  ops::grouped_matmul_backward(dxa, db, dy, xa, grouped(ad.b.w), offsets);  // dxa = dy B; dB += dy^T (s x A^T)
  ops::scale(dxa, ad.scale);                                                // d(x A^T) = s dy B
  Tensor dx_up = dx.defined() ? Tensor::empty(dx.shape(), dx.dtype(), dx.device()) : Tensor();
  gemm.grouped_backward(dx_up, da, dxa, x, a, offsets, segments);  // dx_up = dxa A; dA += dxa^T x
  if (dx.defined()) ops::accumulate(dx, dx_up);
}

}  // namespace moe
