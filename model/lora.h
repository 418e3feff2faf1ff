// LoRA (Hu et al. 2021, laid out as Hugging Face PEFT does): a projection W (N,K) kept
// frozen plus a trained low-rank update,
//   y = x W^T + s (x A^T) B^T,   A (r,K), B (N,r), s = lora.alpha / lora.rank (rsLoRA: / sqrt(rank)),
// B starting at zero so that an adapted model starts as its base. Routed experts get a pair
// per expert, A (E,r,K) and B (E,N,r), sharded over ep with their experts. Under tensor
// parallelism the adapter follows its projection: a column-parallel W (N split) splits B's
// rows and keeps A whole; a row-parallel W (K split) splits A's columns and keeps B whole;
// the whole factor's gradient is each rank's share (Param::tp_partial).
// The adapter lives on its projection (Param::lora); Gemm's Param overloads (model/linear.h)
// add its update in forward and its gradients in backward. Names are the projection's with
// .lora_A / .lora_B before .weight (PEFT's, less its "base_model.model." prefix).
#pragma once
#include <span>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "model/param.h"
#include "model/tensor_parallel.h"

namespace moe {

class Gemm;
struct GemmInput;

struct LoraAdapter {
  Param a, b;    // (r,K) and (N,r); routed experts (El,r,K) and (El,N,r)
  double scale;  // lora_scale: alpha / rank, or alpha / sqrt(rank)
};

// Projections LoRA can adapt (those whose GEMMs go through Gemm's Param overloads), by the
// last part of their module name.
const std::vector<std::string>& lora_projections();
// The module name of a parameter ("...q_proj.weight" -> "...q_proj").
std::string module_name(const std::string& param_name);
// Whether `target` (an entry of lora.targets) names the projection `param_name`.
bool lora_target_matches(const std::string& target, const std::string& param_name);
// An adapter for `base` (a projection named by c.targets), shaped and sharded as it is.
std::shared_ptr<LoraAdapter> make_lora(const Param& base, const LoraConfig& c, const TensorParallel& tp);

// The adapters a config gives the whole model (found by building it without storage,
// Param::ShapesOnly), for the planner: each adapted projection's block (the i of
// model.layers.{i}; MTP's depths are the blocks after the model's), shape (N,K), routed
// experts (0: not routed) and how tensor parallelism splits it (model/tensor_parallel.h).
struct LoraSite {
  enum class Split { none, columns, rows };
  std::int64_t layer, N, K, experts;
  Split split;
  bool in_block;  // false: MTP's eh_proj, which recomputation does not run again
};
std::vector<LoraSite> lora_sites(const ModelConfig& m);

// W + s B A, the update folded into its projection (moe export's merge): w (N,K), a (r,K),
// b (N,r), or per expert (E,N,K), (E,r,K), (E,N,r); host f32 tensors, a new one returned.
Tensor lora_merged(const Tensor& w, const Tensor& a, const Tensor& b, double scale);

// y += s (x A^T) B^T per group of rows (offsets: experts' rows; a plain projection is one
// group), x A^T in the GEMM's precision on its kept input x, the rank-r GEMM in FP32.
void lora_forward(const Gemm& gemm, Tensor& y, const GemmInput& x, const LoraAdapter& ad,
                  std::span<const std::int64_t> offsets);
// dx += the update's input gradient (skipped when dx is undefined); A and B's gradients +=
// (each skipped when undefined); x A^T recomputed from x rather than kept.
void lora_backward(const Gemm& gemm, Tensor& dx, const Tensor& dy, const GemmInput& x, LoraAdapter& ad,
                   std::span<const std::int64_t> offsets, std::span<const std::int64_t> segments);

}  // namespace moe
