// The CPU time loops of s2s.modules.recurrence (the encoder's GRU layers) and s2s.modules.input_feeding (the
// input-fed attentional decoder), forward and backward, in C++.
//
// The Python loops run ~25 element-wise operations per step on [64, 256..768] tensors; each one is a dispatch, a
// pass over memory and, below PyTorch's grain size, one core. Here a step is its few matrix products (at::mm, which
// reaches oneDNN's AMX kernels in bf16) around two or three fused loops that read each activation once. The batch
// rows (and the directions of a bidirectional layer) are split into `parts`, one per core, and each part runs the
// whole loop on its own rows: the rows of a recurrent step are independent, so the cores never wait for each other
// until the loop ends.
//
// Equations and gate layout are those of the Python loops, which stay the reference (and the path for other devices
// and dtypes); tests/unit/test_kernels.py checks the two against each other. Matrix products run in `T`, the autocast
// dtype (float or BFloat16); the gates come in T and their gradients leave in T, as autocast's products make and
// take them; element-wise work, saved activations and the bias gradients (summed per part as the loop goes) stay in
// fp32. The loops write the T copies that the next product, or a weight gradient's, reads as they go, instead of
// casting whole tensors afterwards.

#include <torch/library.h>

#include <limits>

#include "cells.h"

namespace {

using namespace s2s_kernels;

// ---------------------------------------------------------------- the encoder: D GRUs of one layer side by side

// gi [S, D, B, 3H] input gates in T (b_ih included), h0 [D, B, H], w_hh [D, 3H, H] in T, b_hh [D, 3H]
// → hs [S + 1, D, B, H] (h0 first) and hs_t, the same in T; rz [S, D, B, 2H]; n, gh_n [S, D, B, H]
template <typename T>
std::vector<Tensor> gru_forward_impl(const Tensor& gi, const Tensor& h0, const Tensor& w_hh, const Tensor& b_hh,
                                     int64_t parts) {
  const int64_t S = gi.size(0), D = gi.size(1), B = gi.size(2), H = h0.size(2);
  const auto f32 = h0.options();
  auto hs = at::empty({S + 1, D, B, H}, f32), hs_t = at::empty({S + 1, D, B, H}, w_hh.options());
  auto rz = at::empty({S, D, B, 2 * H}, f32), n = at::empty({S, D, B, H}, f32), gh_n = at::empty({S, D, B, H}, f32);
  hs[0].copy_(h0);
  hs_t[0].copy_(h0);
  const T* x = ptr<T>(gi);
  float *hs_p = ptr<float>(hs), *rz_p = ptr<float>(rz), *n_p = ptr<float>(n), *gh_n_p = ptr<float>(gh_n);
  T* hs_t_p = ptr<T>(hs_t);
  for_each_part(D, B, parts, [&](Part p) {
    const int64_t d = p.direction, rows = p.rows();
    auto w_t = w_hh[d].t();
    auto gh_mm = at::empty({rows, 3 * H}, w_hh.options());
    const T* gh = ptr<T>(gh_mm);
    const float* b = ptr<float>(b_hh) + d * 3 * H;
    for (int64_t t = 0; t < S; ++t) {
      const int64_t first = (t * D + d) * B + p.begin, next = first + D * B;  // rows of step t, of state t + 1
      at::mm_out(gh_mm, hs_t.select(0, t).select(0, d).narrow(0, p.begin, rows), w_t);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = first + i;
        gru_row<T, false>(H, x + row * 3 * H, nullptr, gh + i * 3 * H, b, hs_p + row * H, rz_p + row * 2 * H,
                          n_p + row * H, gh_n_p + row * H, hs_p + (next + i) * H, hs_t_p + (next + i) * H);
      }
    }
  });
  return {hs, hs_t, rz, n, gh_n};
}

// d_states [S, D, B, H] and the forward's saved tensors → d_gi, d_gh [S, D, B, 3H] in T, d_b_hh [D, 3H], dh0 [D, B, H]
template <typename T>
std::vector<Tensor> gru_backward_impl(const Tensor& d_states, const Tensor& hs, const Tensor& rz, const Tensor& n,
                                      const Tensor& gh_n, const Tensor& w_hh, int64_t parts) {
  const int64_t S = d_states.size(0), D = d_states.size(1), B = d_states.size(2), H = d_states.size(3);
  const auto f32 = d_states.options();
  auto d_gi = at::empty({S, D, B, 3 * H}, w_hh.options()), d_gh = at::empty({S, D, B, 3 * H}, w_hh.options());
  auto dh0 = at::empty({D, B, H}, f32);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(B, parts / D));
  auto d_b_hh = at::zeros({D * blocks, 3 * H}, f32);  // one row per part
  const float *grad = ptr<float>(d_states), *hs_p = ptr<float>(hs), *rz_p = ptr<float>(rz), *n_p = ptr<float>(n);
  const float* gh_n_p = ptr<float>(gh_n);
  T *d_gi_p = ptr<T>(d_gi), *d_gh_p = ptr<T>(d_gh);
  float* dh0_p = ptr<float>(dh0);
  for_each_part(D, B, parts, [&](Part p) {
    const int64_t d = p.direction, rows = p.rows();
    auto w = w_hh[d];
    auto carried = at::zeros({rows, H}, w_hh.options());  // d_gh · W_hh of the step after, in T
    const T* from_next = ptr<T>(carried);
    float* bias = ptr<float>(d_b_hh) + p.index * 3 * H;
    std::vector<float> buffers(rows * H + H, 0.0f);  // raw pointers into it: loops over them vectorize
    float *dh = buffers.data(), *dh_new = dh + rows * H;
    for (int64_t t = S - 1; t >= 0; --t) {
      const int64_t first = (t * D + d) * B + p.begin;
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = first + i;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dh_new[j] = grad[row * H + j] + dh[i * H + j] + load(from_next[i * H + j]);
        gru_row_backward<T>(H, dh_new, hs_p + row * H, rz_p + row * 2 * H, n_p + row * H, gh_n_p + row * H,
                            d_gi_p + row * 3 * H, d_gh_p + row * 3 * H, bias, dh + i * H);
      }
      at::mm_out(carried, d_gh.select(0, t).select(0, d).narrow(0, p.begin, rows), w);
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < H; ++j) dh0_p[(d * B + p.begin + i) * H + j] = dh[i * H + j] + load(from_next[i * H + j]);
  });
  return {d_gi, d_gh, d_b_hh.view({D, blocks, 3 * H}).sum(1), dh0};
}

// ------------------------------------------------------------- the decoder: input-fed GRU with attention


// x [B, T, 3H] input gates of the embedded words in T (b_ih included); h0, f0 [B, H]; keys [B, S, Q]; values
// [B, S, D]; mask [B, S] (true at real positions); w_if [3H, H], w_hh [3H, H], w_query [Q, H] (bahdanau), w_combine
// [H, H + D] in T; b_hh [3H], energy [Q] (bahdanau), b_combine [H]; gate_w [H], gate_b [1] (a context gate)
// → hs, fs [T + 1, B, H] (the initial ones first) and hs_t, fs_t, the same in T; rz [T, B, 2H]; n, gh_n [T, B, H];
//   query [T, B, Q] (bahdanau); a [T, B, S]; joined [T, B, H + D] in T (the context gated); beta [T, B] (gated)
template <typename T>
std::vector<Tensor> fed_forward_impl(const Tensor& x, const Tensor& h0, const Tensor& f0, const Tensor& keys,
                                     const Tensor& values, const Tensor& mask, const Tensor& w_if, const Tensor& w_hh,
                                     const Tensor& b_hh, const c10::optional<Tensor>& w_query,
                                     const c10::optional<Tensor>& energy, const Tensor& w_combine,
                                     const Tensor& b_combine, const c10::optional<Tensor>& gate_w,
                                     const c10::optional<Tensor>& gate_b, int64_t parts) {
  const bool bahdanau = energy.has_value(), gated = gate_w.has_value();
  const int64_t B = x.size(0), T_ = x.size(1), S = keys.size(1), Q = keys.size(2), D = values.size(2);
  const int64_t H = h0.size(1);
  const auto f32 = h0.options(), tt = w_hh.options();
  auto hs = at::empty({T_ + 1, B, H}, f32), fs = at::empty({T_ + 1, B, H}, f32);
  auto hs_t = at::empty({T_ + 1, B, H}, tt), fs_t = at::empty({T_ + 1, B, H}, tt);
  auto rz = at::empty({T_, B, 2 * H}, f32), n = at::empty({T_, B, H}, f32), gh_n = at::empty({T_, B, H}, f32);
  auto a = at::empty({T_, B, S}, f32), query = at::empty({bahdanau ? T_ : 0, B, Q}, f32);
  auto joined = at::empty({T_, B, H + D}, tt), beta = at::empty({gated ? T_ : 0, B}, f32);
  hs[0].copy_(h0);
  fs[0].copy_(f0);
  hs_t[0].copy_(h0);
  fs_t[0].copy_(f0);
  auto w_if_t = w_if.t(), w_hh_t = w_hh.t(), w_combine_t = w_combine.t();
  auto w_query_t = bahdanau ? w_query->t() : Tensor();
  const float* v = bahdanau ? ptr<float>(*energy) : nullptr;
  const T* x_p = ptr<T>(x);
  const float *keys_p = ptr<float>(keys), *values_p = ptr<float>(values), *b_hh_p = ptr<float>(b_hh);
  const float* b_c = ptr<float>(b_combine);
  const bool* mask_p = ptr<bool>(mask);
  float *hs_p = ptr<float>(hs), *fs_p = ptr<float>(fs), *rz_p = ptr<float>(rz), *n_p = ptr<float>(n);
  float *gh_n_p = ptr<float>(gh_n), *a_p = ptr<float>(a), *query_p = bahdanau ? ptr<float>(query) : nullptr;
  const float* gate_w_p = gated ? ptr<float>(*gate_w) : nullptr;
  const float gate_b_v = gated ? gate_b->item<float>() : 0.0f;
  float* beta_p = gated ? ptr<float>(beta) : nullptr;
  T *hs_t_p = ptr<T>(hs_t), *fs_t_p = ptr<T>(fs_t), *joined_p = ptr<T>(joined);
  for_each_part(1, B, parts, [&](Part p) {
    const int64_t rows = p.rows();
    auto gi_mm = at::empty({rows, 3 * H}, tt), gh_mm = at::empty({rows, 3 * H}, tt);
    auto q_mm = at::empty({rows, Q}, tt), o_mm = at::empty({rows, H}, tt);
    const T *gi = ptr<T>(gi_mm), *gh = ptr<T>(gh_mm), *qm = ptr<T>(q_mm), *o = ptr<T>(o_mm);
    std::vector<float> buffer(D);
    float* context = buffer.data();
    for (int64_t t = 0; t < T_; ++t) {
      const int64_t first = t * B + p.begin, next = first + B;  // rows of step t, and of state t + 1
      at::mm_out(gi_mm, fs_t[t].narrow(0, p.begin, rows), w_if_t);
      at::mm_out(gh_mm, hs_t[t].narrow(0, p.begin, rows), w_hh_t);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t r = p.begin + i, row = first + i;
        gru_row<T, true>(H, x_p + (r * T_ + t) * 3 * H, gi + i * 3 * H, gh + i * 3 * H, b_hh_p, hs_p + row * H,
                         rz_p + row * 2 * H, n_p + row * H, gh_n_p + row * H, hs_p + (next + i) * H,
                         hs_t_p + (next + i) * H);
      }
      if (bahdanau) at::mm_out(q_mm, hs_t[t + 1].narrow(0, p.begin, rows), w_query_t);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t r = p.begin + i, row = first + i;
        float* q = nullptr;
        if (bahdanau) {
          q = query_p + row * Q;
          for (int64_t j = 0; j < Q; ++j) q[j] = load(qm[i * Q + j]);
        }
        const float* h = hs_p + (next + i) * H;
        const float gate = gated ? (beta_p[row] = context_gate(H, gate_w_p, gate_b_v, h)) : 1.0f;
        attend_row<T>(S, Q, H, D, keys_p + r * S * Q, values_p + r * S * D, mask_p + r * S, q, v, h,
                      a_p + row * S, context, joined_p + row * (H + D), gate);
      }
      at::mm_out(o_mm, joined[t].narrow(0, p.begin, rows), w_combine_t);
      for (int64_t i = 0; i < rows; ++i) {
        float* f = fs_p + (next + i) * H;
        T* ft = fs_t_p + (next + i) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          f[j] = fast_tanh(load(o[i * H + j]) + b_c[j]);
          store(ft[j], f[j]);
        }
      }
    }
  });
  return {hs, fs, hs_t, fs_t, rz, n, gh_n, query, a, joined, beta};
}

// The backward loop, from d_outputs [T, B, H] (of the attentional vectors) and d_last [B, H] (of the last state)
// → g_gi, g_gh [T, B, 3H], g_pre [T, B, H] (before the combining tanh) and g_query [T, B, Q] (bahdanau) in T;
//   g_context [T, B, D] (of the context before its gate); g_gate [T, B] (of a context gate's pre-activation);
//   d_keys [B, S, Q]; g_energy [Q] (bahdanau); the biases' d_b_hh [3H], d_b_combine [H]; dh0, df0 [B, H]
template <typename T>
std::vector<Tensor> fed_backward_impl(const Tensor& d_outputs, const Tensor& d_last, const Tensor& hs,
                                      const Tensor& fs, const Tensor& rz, const Tensor& n, const Tensor& gh_n,
                                      const Tensor& query, const Tensor& a, const Tensor& keys, const Tensor& values,
                                      const Tensor& w_if, const Tensor& w_hh, const c10::optional<Tensor>& w_query,
                                      const c10::optional<Tensor>& energy, const Tensor& w_combine,
                                      const c10::optional<Tensor>& gate_w, const c10::optional<Tensor>& beta,
                                      const c10::optional<Tensor>& joined, const Tensor& d_a, int64_t parts) {
  const bool bahdanau = energy.has_value(), gated = gate_w.has_value();
  const int64_t B = a.size(1), T_ = a.size(0), S = a.size(2), Q = keys.size(2), D = values.size(2), H = hs.size(2);
  const auto f32 = d_outputs.options(), tt = w_hh.options();
  auto g_gi = at::empty({T_, B, 3 * H}, tt), g_gh = at::empty({T_, B, 3 * H}, tt), g_pre = at::empty({T_, B, H}, tt);
  auto g_query = at::empty({bahdanau ? T_ : 0, B, Q}, tt), g_context = at::empty({T_, B, D}, f32);
  auto g_gate = at::empty({gated ? T_ : 0, B}, f32);
  auto d_keys = at::zeros({B, S, Q}, f32), dh0 = at::empty({B, H}, f32), df0 = at::empty({B, H}, f32);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(B, parts));
  auto sums = at::zeros({blocks, Q + 3 * H + H}, f32);  // per part: g_energy, d_b_hh, d_b_combine
  const float* v = bahdanau ? ptr<float>(*energy) : nullptr;
  const float *grad = ptr<float>(d_outputs), *hs_p = ptr<float>(hs), *fs_p = ptr<float>(fs), *rz_p = ptr<float>(rz);
  const float *n_p = ptr<float>(n), *gh_n_p = ptr<float>(gh_n), *a_p = ptr<float>(a), *keys_p = ptr<float>(keys);
  const float *values_p = ptr<float>(values), *query_p = bahdanau ? ptr<float>(query) : nullptr;
  const float* last = d_last.defined() ? ptr<float>(d_last) : nullptr;
  const float* d_a_p = d_a.defined() ? ptr<float>(d_a) : nullptr;  // a loss's own gradient of the weights
  const float *gate_w_p = gated ? ptr<float>(*gate_w) : nullptr, *beta_p = gated ? ptr<float>(*beta) : nullptr;
  const T* joined_p = gated ? ptr<T>(*joined) : nullptr;
  float* g_gate_p = gated ? ptr<float>(g_gate) : nullptr;
  T *g_gi_p = ptr<T>(g_gi), *g_gh_p = ptr<T>(g_gh), *g_pre_p = ptr<T>(g_pre);
  T* g_query_p = bahdanau ? ptr<T>(g_query) : nullptr;
  float *g_context_p = ptr<float>(g_context), *d_keys_p = ptr<float>(d_keys);
  float *dh0_p = ptr<float>(dh0), *df0_p = ptr<float>(df0);
  for_each_part(1, B, parts, [&](Part p) {
    const int64_t rows = p.rows();
    auto dj_mm = at::empty({rows, H + D}, tt), dq_mm = at::empty({rows, H}, tt);
    auto dh_mm = at::zeros({rows, H}, tt), df_mm = at::zeros({rows, H}, tt);
    const T *dj_p = ptr<T>(dj_mm), *dq_p = ptr<T>(dq_mm), *dh_mm_p = ptr<T>(dh_mm), *df_p = ptr<T>(df_mm);
    float* g_energy = ptr<float>(sums) + p.index * (Q + 4 * H);
    float *d_b_hh = g_energy + Q, *d_b_combine = d_b_hh + 3 * H;
    std::vector<float> buffers(2 * rows * H + S + Q, 0.0f);  // raw pointers into it: loops over them vectorize
    float *dh = buffers.data(), *dh_new = dh + rows * H, *ds = dh_new + rows * H, *dq = ds + S;
    if (last)
      for (int64_t i = 0; i < rows * H; ++i) dh[i] = last[p.begin * H + i];
    for (int64_t t = T_ - 1; t >= 0; --t) {
      const int64_t first = t * B + p.begin;
      // through f = tanh(o): pre = (d_out + df) (1 - f²), df being W_if's share of the step after
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = first + i;
        const float* f = fs_p + (row + B) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float pre = (grad[row * H + j] + load(df_p[i * H + j])) * (1.0f - f[j] * f[j]);
          store(g_pre_p[row * H + j], pre);
          d_b_combine[j] += pre;
        }
      }
      at::mm_out(dj_mm, g_pre[t].narrow(0, p.begin, rows), w_combine);  // [rows, H + D]: for h and the context
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t r = p.begin + i, row = first + i;
        const T* dj = dj_p + i * (H + D);
        const float *ai = a_p + row * S, *val = values_p + r * S * D, *key = keys_p + r * S * Q;
        const float* h = hs_p + (row + B) * H;
        float *dc = g_context_p + row * D, *dhn = dh_new + i * H, *dk = d_keys_p + r * S * Q;
#pragma omp simd
        for (int64_t c = 0; c < D; ++c) dc[c] = load(dj[H + c]);
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dhn[j] = dh[i * H + j] + load(dh_mm_p[i * H + j]) + load(dj[j]);
        if (gated) {  // through β c: β's pre-activation gets (1 - β) Σ dc (β c), and c gets β dc
          const T* gc = joined_p + row * (H + D) + H;
          const float b = beta_p[row];
          const float dg = (1.0f - b) * lane_sum(D, [&](int64_t c) { return dc[c] * load(gc[c]); });
          g_gate_p[row] = dg;
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) dhn[j] += dg * gate_w_p[j];
#pragma omp simd
          for (int64_t c = 0; c < D; ++c) dc[c] *= b;
        }
        float weighted = 0.0f;  // softmax backward: ds = a (da - Σ a da), da = values · dc (+ d_a)
        const float* extra = d_a_p ? d_a_p + row * S : nullptr;
        for (int64_t s = 0; s < S; ++s) {
          const float* vs = val + s * D;
          ds[s] = ai[s] != 0.0f ? lane_sum(D, [&](int64_t c) { return vs[c] * dc[c]; }) : 0.0f;
          if (extra && ai[s] != 0.0f) ds[s] += extra[s];
          weighted += ai[s] * ds[s];
        }
        for (int64_t s = 0; s < S; ++s) ds[s] = ai[s] * (ds[s] - weighted);
        const float* q = bahdanau ? query_p + row * Q : nullptr;
        if (bahdanau) std::fill(dq, dq + Q, 0.0f);
        for (int64_t s = 0; s < S; ++s) {
          if (ds[s] == 0.0f) continue;  // padding, or a weight that underflowed
          const float g = ds[s], *ks = key + s * Q;
          float* dks = dk + s * Q;
          if (bahdanau) {  // through v · tanh(keys + query)
#pragma omp simd
            for (int64_t j = 0; j < Q; ++j) {
              const float en = fast_tanh(ks[j] + q[j]);
              const float de = g * v[j] * (1.0f - en * en);
              g_energy[j] += g * en;
              dks[j] += de;
              dq[j] += de;
            }
          } else {  // through keys · h
#pragma omp simd
            for (int64_t j = 0; j < H; ++j) {
              dhn[j] += g * ks[j];
              dks[j] += g * h[j];
            }
          }
        }
        if (bahdanau) cast_rows(dq, g_query_p + row * Q, Q);
      }
      if (bahdanau) at::mm_out(dq_mm, g_query[t].narrow(0, p.begin, rows), *w_query);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = first + i;
        float* dhn = dh_new + i * H;
        if (bahdanau) {
#pragma omp simd
          for (int64_t j = 0; j < H; ++j) dhn[j] += load(dq_p[i * H + j]);
        }
        gru_row_backward<T>(H, dhn, hs_p + row * H, rz_p + row * 2 * H, n_p + row * H, gh_n_p + row * H,
                            g_gi_p + row * 3 * H, g_gh_p + row * 3 * H, d_b_hh, dh + i * H);
      }
      at::mm_out(dh_mm, g_gh[t].narrow(0, p.begin, rows), w_hh);
      at::mm_out(df_mm, g_gi[t].narrow(0, p.begin, rows), w_if);
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < H; ++j) {
        const int64_t at = (p.begin + i) * H + j;
        dh0_p[at] = dh[i * H + j] + load(dh_mm_p[i * H + j]);
        df0_p[at] = load(df_p[i * H + j]);
      }
  });
  auto total = sums.sum(0);
  return {g_gi, g_gh, g_pre, g_query, g_context, g_gate, d_keys, total.narrow(0, 0, Q), total.narrow(0, Q, 3 * H),
          total.narrow(0, Q + 3 * H, H), dh0, df0};
}

// ------------------------------------------------------------------------------------------ the operators

std::vector<Tensor> gru_forward(const Tensor& gi, const Tensor& h0, const Tensor& w_hh, const Tensor& b_hh,
                                int64_t parts) {
  check({h0, b_hh}, {gi, w_hh}, w_hh);
  return with_matmul_type(w_hh, [&](auto type) {
    return gru_forward_impl<decltype(type)>(gi, h0, w_hh, b_hh, parts);
  });
}

std::vector<Tensor> gru_backward(const Tensor& d_states, const Tensor& hs, const Tensor& rz, const Tensor& n,
                                 const Tensor& gh_n, const Tensor& w_hh, int64_t parts) {
  check({d_states, hs, rz, n, gh_n}, {w_hh}, w_hh);
  return with_matmul_type(w_hh, [&](auto type) {
    return gru_backward_impl<decltype(type)>(d_states, hs, rz, n, gh_n, w_hh, parts);
  });
}

std::vector<Tensor> fed_attention_forward(const Tensor& x, const Tensor& h0, const Tensor& f0, const Tensor& keys,
                                          const Tensor& values, const Tensor& mask, const Tensor& w_if,
                                          const Tensor& w_hh, const Tensor& b_hh, const c10::optional<Tensor>& w_query,
                                          const c10::optional<Tensor>& energy, const Tensor& w_combine,
                                          const Tensor& b_combine, const c10::optional<Tensor>& gate_w,
                                          const c10::optional<Tensor>& gate_b, int64_t parts) {
  check({h0, f0, keys, values, b_hh, b_combine}, {x, w_if, w_hh, w_combine}, w_hh);
  if (energy.has_value()) check({*energy}, {*w_query}, w_hh);
  TORCH_CHECK(gate_w.has_value() == gate_b.has_value(), "a context gate has a weight and a bias");
  if (gate_w.has_value()) check({*gate_w, *gate_b}, {}, w_hh);
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous(), "the mask is a contiguous bool tensor");
  return with_matmul_type(w_hh, [&](auto type) {
    return fed_forward_impl<decltype(type)>(x, h0, f0, keys, values, mask, w_if, w_hh, b_hh, w_query, energy,
                                            w_combine, b_combine, gate_w, gate_b, parts);
  });
}

std::vector<Tensor> fed_attention_backward(const Tensor& d_outputs, const c10::optional<Tensor>& d_last,
                                           const Tensor& hs, const Tensor& fs, const Tensor& rz, const Tensor& n,
                                           const Tensor& gh_n, const Tensor& query, const Tensor& a,
                                           const Tensor& keys, const Tensor& values, const Tensor& w_if,
                                           const Tensor& w_hh, const c10::optional<Tensor>& w_query,
                                           const c10::optional<Tensor>& energy, const Tensor& w_combine,
                                           const c10::optional<Tensor>& gate_w, const c10::optional<Tensor>& beta,
                                           const c10::optional<Tensor>& joined,
                                           const c10::optional<Tensor>& d_weights, int64_t parts) {
  const Tensor last = d_last.has_value() ? d_last->contiguous() : Tensor();
  const Tensor d_a = d_weights.has_value() ? d_weights->contiguous() : Tensor();
  check({d_outputs, hs, fs, rz, n, gh_n, query, a, keys, values}, {w_if, w_hh, w_combine}, w_hh);
  if (last.defined()) check({last}, {}, w_hh);
  if (d_a.defined()) {
    check({d_a}, {}, w_hh);
    TORCH_CHECK(d_a.sizes() == a.sizes(), "d_weights has the attention weights' shape [T, B, S]");
  }
  if (energy.has_value()) check({*energy}, {*w_query}, w_hh);
  TORCH_CHECK(gate_w.has_value() == beta.has_value() && beta.has_value() == joined.has_value(),
              "a context gate's backward reads its weight, its betas and the joined rows");
  if (gate_w.has_value()) check({*gate_w, *beta}, {*joined}, w_hh);
  return with_matmul_type(w_hh, [&](auto type) {
    return fed_backward_impl<decltype(type)>(d_outputs, last, hs, fs, rz, n, gh_n, query, a, keys, values, w_if,
                                             w_hh, w_query, energy, w_combine, gate_w, beta, joined, d_a, parts);
  });
}

}  // namespace

TORCH_LIBRARY(s2s_kernels, m) {
  m.def("gru_forward(Tensor gi, Tensor h0, Tensor w_hh, Tensor b_hh, int parts) -> Tensor[]", &gru_forward);
  m.def(
      "gru_backward(Tensor d_states, Tensor hs, Tensor rz, Tensor n, Tensor gh_n, Tensor w_hh, int parts) -> Tensor[]",
      &gru_backward);
  m.def(
      "fed_attention_forward(Tensor x, Tensor h0, Tensor f0, Tensor keys, Tensor values, Tensor mask, Tensor w_if, "
      "Tensor w_hh, Tensor b_hh, Tensor? w_query, Tensor? energy, Tensor w_combine, Tensor b_combine, "
      "Tensor? gate_w, Tensor? gate_b, int parts) -> Tensor[]",
      &fed_attention_forward);
  m.def(
      "fed_attention_backward(Tensor d_outputs, Tensor? d_last, Tensor hs, Tensor fs, Tensor rz, Tensor n, "
      "Tensor gh_n, Tensor query, Tensor a, Tensor keys, Tensor values, Tensor w_if, Tensor w_hh, Tensor? w_query, "
      "Tensor? energy, Tensor w_combine, Tensor? gate_w, Tensor? beta, Tensor? joined, Tensor? d_weights, "
      "int parts) -> Tensor[]",
      &fed_attention_backward);
}
