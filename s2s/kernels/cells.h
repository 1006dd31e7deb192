// The per-row arithmetic of the recurrent cells and of attention, shared by the training loops (recurrence.cpp)
// and search (search.cpp): each function computes one batch row, so callers split rows between threads freely.
#pragma once

#include <limits>

#include "common.h"

namespace s2s_kernels {

// One GRU step for one row (PyTorch's equations and gate order r, z, n):
//   gi = x (+ gi_mm);  gh = gh_mm + b_hh;  r, z = σ(gi + gh);  n = tanh(gi_n + r ⊙ gh_n);  h' = n + z ⊙ (h - n)
// Saves r, z, n and gh_n (all the backward needs); writes h' in fp32 and in T.
template <typename T, bool with_mm>
inline void gru_row(int64_t H, const T* __restrict__ x, const T* __restrict__ gi_mm, const T* __restrict__ gh_mm,
                    const float* __restrict__ b_hh, const float* __restrict__ h, float* __restrict__ rz,
                    float* __restrict__ n, float* __restrict__ gh_n, float* __restrict__ h_out,
                    T* __restrict__ h_out_t) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    float gi_r = load(x[j]), gi_z = load(x[H + j]), gi_n = load(x[2 * H + j]);
    if (with_mm) {
      gi_r += load(gi_mm[j]);
      gi_z += load(gi_mm[H + j]);
      gi_n += load(gi_mm[2 * H + j]);
    }
    const float r = fast_sigmoid(gi_r + load(gh_mm[j]) + b_hh[j]);
    const float z = fast_sigmoid(gi_z + load(gh_mm[H + j]) + b_hh[H + j]);
    const float ghn = load(gh_mm[2 * H + j]) + b_hh[2 * H + j];
    const float nn = fast_tanh(gi_n + r * ghn);
    const float hn = nn + z * (h[j] - nn);
    rz[j] = r;
    rz[H + j] = z;
    n[j] = nn;
    gh_n[j] = ghn;
    h_out[j] = hn;
    store(h_out_t[j], hn);
  }
}

// The gradient of gru_row: from dh' (of the new state) the gradients of the input gates (d_gi) and the hidden gates
// (d_gh) in T, the latter's sum into d_b_hh; dh (of the old state) gets the part that flows around the gates (the
// caller adds d_gh · W_hh).
template <typename T>
inline void gru_row_backward(int64_t H, const float* __restrict__ dh_new, const float* __restrict__ h,
                             const float* __restrict__ rz, const float* __restrict__ n, const float* __restrict__ gh_n,
                             T* __restrict__ d_gi, T* __restrict__ d_gh, float* __restrict__ d_b_hh,
                             float* __restrict__ dh) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const float r = rz[j], z = rz[H + j], nn = n[j], g = dh_new[j];
    const float dn = g * (1.0f - z) * (1.0f - nn * nn);
    const float dr = dn * gh_n[j] * r * (1.0f - r);
    const float dz = g * (h[j] - nn) * z * (1.0f - z);
    store(d_gi[j], dr);
    store(d_gi[H + j], dz);
    store(d_gi[2 * H + j], dn);
    store(d_gh[j], dr);
    store(d_gh[H + j], dz);
    store(d_gh[2 * H + j], dn * r);
    d_b_hh[j] += dr;
    d_b_hh[H + j] += dz;
    d_b_hh[2 * H + j] += dn * r;
    dh[j] = g * z;
  }
}

template <typename T>
void cast_rows(const float* __restrict__ from, T* __restrict__ to, int64_t count) {
#pragma omp simd
  for (int64_t i = 0; i < count; ++i) store(to[i], from[i]);
}

// Attention for one row: scores over the source (bahdanau: v · tanh(keys + query); luong: keys · h), a softmax over
// the real positions, the context, scaled by `gate` (a context gate's β; 1 without one); writes the weights a [S]
// and [h; context] in T for the combining product.
template <typename T>
inline void attend_row(int64_t S, int64_t Q, int64_t H, int64_t D, const float* __restrict__ keys,
                       const float* __restrict__ values, const bool* __restrict__ real, const float* __restrict__ query,
                       const float* __restrict__ energy, const float* __restrict__ h, float* __restrict__ a,
                       float* __restrict__ context, T* __restrict__ joined, float gate = 1.0f) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t s = 0; s < S; ++s) {
    float score = -std::numeric_limits<float>::infinity();
    if (real[s]) {
      const float* k = keys + s * Q;
      score = energy ? lane_sum(Q, [&](int64_t q) { return energy[q] * fast_tanh(k[q] + query[q]); })
                     : lane_sum(Q, [&](int64_t q) { return k[q] * h[q]; });
      top = std::max(top, score);
    }
    a[s] = score;
  }
  float total = 0.0f;
  for (int64_t s = 0; s < S; ++s) {
    a[s] = real[s] ? std::exp(a[s] - top) : 0.0f;
    total += a[s];
  }
  const float scale = total > 0.0f ? 1.0f / total : 0.0f;
  for (int64_t c = 0; c < D; ++c) context[c] = 0.0f;
  for (int64_t s = 0; s < S; ++s) {
    a[s] *= scale;
    if (a[s] == 0.0f) continue;
    const float* v = values + s * D;
    const float w = a[s];
#pragma omp simd
    for (int64_t c = 0; c < D; ++c) context[c] += w * v[c];
  }
  if (gate != 1.0f)
    for (int64_t c = 0; c < D; ++c) context[c] *= gate;
  cast_rows(h, joined, H);
  cast_rows(context, joined + H, D);
}

// The context gate of Show, Attend and Tell: β = σ(w · h + b), one scalar per row, in fp32.
inline float context_gate(int64_t H, const float* __restrict__ w, float b, const float* __restrict__ h) {
  return 1.0f / (1.0f + std::exp(-(lane_sum(H, [&](int64_t j) { return w[j] * h[j]; }) + b)));
}

}  // namespace s2s_kernels
