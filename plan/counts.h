// What a model is made of, counted from its config alone: parameters (whole, per token, per
// block part) and training FLOPs. The cost report and the planner use these; tests hold them
// to the model's own tensors and to the FLOPs its GEMMs actually run (docs/COST.md).
#pragma once
#include <cstdint>

#include "config/model_config.h"

namespace moe {

bool is_moe_layer(const ModelConfig& m, std::int64_t layer);
// Blocks: the model's n_layers and one per MTP depth (the depths' blocks are layers
// n_layers, n_layers + 1, ...: MoE blocks as the model's later ones).
std::int64_t blocks(const ModelConfig& m);
std::int64_t moe_layers(const ModelConfig& m);                 // MoE blocks, MTP's included (0 without routed experts)
std::int64_t mtp_projection_parameters(const ModelConfig& m);  // one MTP depth's eh_proj

// One block's parts. Matrix parameters go through GEMMs; norm weights do not.
std::int64_t attention_matrix_parameters(const ModelConfig& m);  // q, k, v, o (mla: with the latent projections)
// mla: the projections into the latents (q_a_proj, kv_a_proj_with_mqa), which tensor
// parallelism keeps whole on every rank (model/mla.h); 0 under gqa.
std::int64_t mla_latent_parameters(const ModelConfig& m);
std::int64_t block_norm_parameters(const ModelConfig& m);     // the two block norms (mla: and the latent norms)
std::int64_t dense_ffn_parameters(const ModelConfig& m);      // gate, up, down of the dense FFN
std::int64_t shared_expert_parameters(const ModelConfig& m);  // all shared experts of one MoE block
std::int64_t router_parameters(const ModelConfig& m);         // one MoE block's router
std::int64_t routed_expert_parameters(const ModelConfig& m);  // one routed expert

// Matrix parameters a token multiplies through in a training step: attention, dense FFN or
// router + shared + top_k routed experts per block, the LM head (the embedding is a lookup),
// and per MTP depth eh_proj and the LM head again. Active parameters add the norm weights.
std::int64_t gemm_parameters_per_token(const ModelConfig& m);
std::int64_t active_parameters(const ModelConfig& m);
// Every parameter (all experts, the embedding included); routed experts alone.
std::int64_t total_parameters(const ModelConfig& m);
std::int64_t expert_parameters(const ModelConfig& m);

// LoRA (model/lora.h; lora.rank > 0): every base tensor frozen, so a base GEMM runs forward
// and input gradient only, 4 FLOPs per parameter per token instead of 6 (base_gemm_passes).
// An adapter (A (r,K), B (N,r)) a token passes through costs 8 r K (x A^T in forward and again
// in backward, dA, the input's gradient) + 6 r N (B's forward, dB, d(x A^T)) per token.
int base_gemm_passes(const ModelConfig& m);
std::int64_t lora_parameters(const ModelConfig& m);
double lora_flops_per_token(const ModelConfig& m);

// Attention-core FLOPs per token per block for forward + backward: 6 x heads x seq_len x
// (qk head dim + v head dim), the full T x T score matrix (no causal discount, PaLM's
// convention, and what the CPU kernels compute).
double attention_core_flops_per_token(const ModelConfig& m);
// Training FLOPs per token: base_gemm_passes x gemm_parameters_per_token + layers x attention
// core (+ the LoRA adapters'). Exactly
// the multiply-adds the ops' GEMMs run in a dropless step (tests/plan compares them).
double training_flops_per_token(const ModelConfig& m);
// What full recomputation adds: every block's forward once more, adapters included (the LM
// head and eh_proj are not recomputed).
double recompute_flops_per_token(const ModelConfig& m);

}  // namespace moe
