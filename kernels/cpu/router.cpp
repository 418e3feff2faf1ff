// MoE router: scores, biased top-k selection with group limits, gate weights.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/common.h"
#include "kernels/cpu/kernels.h"

namespace moe::cpu {
namespace {
using ops::RouterKind;

// Orders candidates by biased score, highest first; equal scores go to the lower index so
// that every backend and every rank picks the same experts.
template <class T>
auto by_score_desc(const std::vector<T>& c) {
  return [&c](int a, int b) { return c[a] > c[b] || (c[a] == c[b] && a < b); };
}

// Chooses row n's experts into idx[0..k) from biased scores c (E): best groups, then top-k.
template <class T>
void select(std::int32_t* idx, const std::vector<T>& c, const ops::RouterSpec& s, std::vector<int>& cand,
            std::vector<T>& gscore) {
  const int E = static_cast<int>(c.size()), gs = E / s.n_groups;
  cand.clear();
  if (s.n_groups == 1 || s.topk_groups == s.n_groups) {
    cand.resize(E);
    std::iota(cand.begin(), cand.end(), 0);
  } else {
    gscore.assign(s.n_groups, T(0));
    std::vector<int> order(gs), groups(s.n_groups);
    for (int g = 0; g < s.n_groups; ++g) {  // group score: sum of its top-2 biased scores
      std::iota(order.begin(), order.end(), g * gs);
      const int m = std::min(2, gs);
      std::partial_sort(order.begin(), order.begin() + m, order.end(), by_score_desc(c));
      for (int i = 0; i < m; ++i) gscore[g] += c[order[i]];
    }
    std::iota(groups.begin(), groups.end(), 0);
    std::partial_sort(groups.begin(), groups.begin() + s.topk_groups, groups.end(), by_score_desc(gscore));
    for (int i = 0; i < s.topk_groups; ++i)
      for (int e = groups[i] * gs; e < (groups[i] + 1) * gs; ++e) cand.push_back(e);
  }
  std::partial_sort(cand.begin(), cand.begin() + s.top_k, cand.end(), by_score_desc(c));
  std::copy(cand.begin(), cand.begin() + s.top_k, idx);
}

}  // namespace

void router_forward(Tensor& scores, Tensor& index, Tensor& gate, const Tensor& logits, const Tensor& bias,
                    const ops::RouterSpec& spec) {
  const std::int64_t N = logits.size(0), E = logits.size(1), K = spec.top_k;
  dispatch_real(logits.dtype(), [&]<class T>() {
    const T *lp = logits.data<T>(), *bp = bias.data<T>();
    T *sp = scores.data<T>(), *gp = gate.data<T>();
    std::int32_t* ip = index.data<std::int32_t>();
#pragma omp parallel
    {
      std::vector<T> c(static_cast<std::size_t>(E)), gscore;
      std::vector<int> cand;
#pragma omp for
      for (std::int64_t n = 0; n < N; ++n) {
        const T* l = lp + n * E;
        T* s = sp + n * E;
        if (spec.kind == RouterKind::sigmoid) {
          for (std::int64_t e = 0; e < E; ++e) s[e] = T(1) / (T(1) + std::exp(-l[e]));
        } else {
          const T mx = *std::max_element(l, l + E);
          T sum = 0;
          for (std::int64_t e = 0; e < E; ++e) sum += (s[e] = std::exp(l[e] - mx));
          for (std::int64_t e = 0; e < E; ++e) s[e] /= sum;
        }
        for (std::int64_t e = 0; e < E; ++e) c[e] = s[e] + bp[e];
        std::int32_t* idx = ip + n * K;
        select(idx, c, spec, cand, gscore);
        T sum = 0;
        for (std::int64_t i = 0; i < K; ++i) sum += s[idx[i]];
        const T norm = spec.normalize ? T(spec.scaling) / sum : T(spec.scaling);
        for (std::int64_t i = 0; i < K; ++i) gp[n * K + i] = s[idx[i]] * norm;
      }
    }
  });
}

void router_backward(Tensor& dlogits, const Tensor& dgate, const Tensor& scores, const Tensor& index,
                     const ops::RouterSpec& spec, const Tensor& dscores) {
  const std::int64_t N = scores.size(0), E = scores.size(1), K = spec.top_k;
  dispatch_real(scores.dtype(), [&]<class T>() {
    const T *sp = scores.data<T>(), *dgp = dgate.data<T>();
    const std::int32_t* ip = index.data<std::int32_t>();
    const T* dsp = dscores.defined() ? dscores.data<T>() : nullptr;
    T* dlp = dlogits.data<T>();
#pragma omp parallel
    {
      std::vector<T> ds(static_cast<std::size_t>(E));  // gradient w.r.t. the scores
#pragma omp for
      for (std::int64_t n = 0; n < N; ++n) {
        const T* s = sp + n * E;
        const std::int32_t* idx = ip + n * K;
        const T* dg = dgp + n * K;
        std::fill(ds.begin(), ds.end(), T(0));
        if (spec.normalize) {  // g_i = c a_i / S  =>  da_j = c (dg_j / S - sum_i dg_i a_i / S^2)
          T S = 0, dot = 0;
          for (std::int64_t i = 0; i < K; ++i) S += s[idx[i]], dot += dg[i] * s[idx[i]];
          for (std::int64_t i = 0; i < K; ++i) ds[idx[i]] = T(spec.scaling) * (dg[i] / S - dot / (S * S));
        } else {
          for (std::int64_t i = 0; i < K; ++i) ds[idx[i]] = T(spec.scaling) * dg[i];
        }
        if (dsp)
          for (std::int64_t e = 0; e < E; ++e) ds[e] += dsp[n * E + e];
        T* dl = dlp + n * E;
        if (spec.kind == RouterKind::sigmoid) {
          for (std::int64_t e = 0; e < E; ++e) dl[e] = ds[e] * s[e] * (T(1) - s[e]);
        } else {  // softmax backward: p * (ds - sum(ds p))
          T dot = 0;
          for (std::int64_t e = 0; e < E; ++e) dot += ds[e] * s[e];
          for (std::int64_t e = 0; e < E; ++e) dl[e] = s[e] * (ds[e] - dot);
        }
      }
    }
  });
}

}  // namespace moe::cpu
