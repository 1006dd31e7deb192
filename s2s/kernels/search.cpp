// Greedy search and beam search over the input-fed attentional GRU decoder of s2s.modules.input_feeding, the whole
// loop in C++. The Python search of s2s.search stays the reference (and the path for every other model, device and
// dtype); between a step's operators it reorders and selects hypotheses with dozens of small tensor operations.
//
// Same hypotheses, not merely similar ones: under bf16 a difference in the last bit of an fp32 value can flip its
// rounding before a product, and the beam amplifies such flips into other choices. So whatever the Python step
// computes through a reduction whose order of sums is PyTorch's own (the attention scores, softmax and context, the
// log-probabilities) is computed here by the same PyTorch operators, and where tied values make the order of a
// top-k the operator's own choice, PyTorch's topk or max decides; the products are the same at::mm / at::addmm
// calls in T (float or BFloat16, as autocast makes them). Only the GRU cell and the combining tanh run as fused
// loops (cells.h). Then the rules of s2s.search.BeamState, per sentence, greedy search being a beam of one: of the
// best 2K continuations, those that end (EOS) within the first K join the sentence's K finished hypotheses, ranked by
// score / ((5 + length) / 6)^alpha; the best K others live on; only EOS is possible at the sentence's length limit;
// a sentence is done when K hypotheses have finished or it reaches its limit, and then leaves the batch.
//
// Sentences are split into parts, one per thread, and each part runs the whole loop over its own sentences.

#include <torch/library.h>

#include <cmath>
#include <limits>

#include "cells.h"

namespace {

using namespace s2s_kernels;

constexpr float NEG_INF = -std::numeric_limits<float>::infinity();

// The decoder: the products' operands in T (weights transposed, as the products read them), fp32 vectors, sizes.
struct Weights {
  Tensor embedding, w_ie_t, b_ih, w_if_t, w_hh_t, w_query_t, w_combine_t, w_out_t, b_out;
  Tensor energy;  // [Q] fp32; undefined for Luong attention
  Tensor gate_w, gate_b;  // [H], [1] fp32: a context gate's; undefined without one
  const float *b_hh, *b_combine;
  int64_t V, E, H, Q, D;
};

// What the search is asked for.
struct Settings {
  int64_t beam, nbest, length;  // length: the longest limit, EOS included
  double alpha;
  bool attention;
  int64_t bos, eos, pad;
};

// The `count` largest values of a row [V] and their indices, best first, when the answer is unambiguous: no two of
// them equal and none equal to the best value left out, so that any top-k gives the same. False otherwise (ties:
// their order is the operator's own, so the caller asks PyTorch's). Blocks of 16 that cannot enter are skipped,
// which is nearly all of them once the first few have been read.
template <typename T>
bool distinct_best(int64_t V, const T* __restrict__ row, int64_t count, float* value, int64_t* index) {
  std::fill(value, value + count, NEG_INF);
  float left_out = NEG_INF;
  constexpr int64_t block = 16;
  for (int64_t first = 0; first < V; first += block) {
    const int64_t last = std::min(V, first + block);
    float top = NEG_INF;
    for (int64_t v = first; v < last; ++v) top = std::max(top, load(row[v]));
    if (top < value[count - 1]) {
      left_out = std::max(left_out, top);
      continue;
    }
    for (int64_t v = first; v < last; ++v) {
      const float x = load(row[v]);
      if (!(x > value[count - 1])) {
        left_out = std::max(left_out, x);
        continue;
      }
      left_out = std::max(left_out, value[count - 1]);  // the one it pushes out
      int64_t at = count - 1;
      for (; at > 0 && value[at - 1] < x; --at) {
        value[at] = value[at - 1];
        index[at] = index[at - 1];
      }
      value[at] = x;
      index[at] = v;
    }
  }
  if (!(value[count - 1] > left_out)) return false;
  for (int64_t i = 1; i < count; ++i)
    if (value[i] == value[i - 1]) return false;
  return true;
}

// One decoding step of a part's running sentences, K rows each, and the buffers it reuses: the sentences' encoded
// sources (keys [A, S, Q], values [A, S, D], pad [A, S], true at padding: a copy, compacted as sentences end), the
// rows' state (h, f in fp32; h_t, f_t in T), the step's attention weights a [rows, S] and logits [rows, V] in T.
template <typename T>
struct Step {
  Tensor keys, values, pad;
  Tensor h, h_next, f, h_t, f_t, a, logits;
  Tensor emb, gi_e, gi_f, gh, query, joined, combined;  // the products' outputs, in T
  std::vector<float> rz, n, gh_n;                        // what gru_row saves for a backward (unused here)

  Step(const Weights& w, const Tensor& keys_, const Tensor& values_, const Tensor& pad_, int64_t capacity,
       const at::TensorOptions& tt)
      : keys(keys_.clone()), values(values_.clone()), pad(pad_.clone()) {
    const auto f32 = keys.options();
    h = at::empty({capacity, w.H}, f32), h_next = at::empty_like(h), f = at::empty_like(h);
    h_t = at::empty({capacity, w.H}, tt), f_t = at::empty_like(h_t);
    a = at::empty({capacity, keys.size(1)}, f32), logits = at::empty({capacity, w.V}, tt);
    emb = at::empty({capacity, w.E}, tt), gi_e = at::empty({capacity, 3 * w.H}, tt), gi_f = at::empty_like(gi_e);
    gh = at::empty_like(gi_e), query = at::empty({capacity, w.Q}, tt), joined = at::empty({capacity, w.H + w.D}, tt);
    combined = at::empty({capacity, w.H}, tt);
    rz.resize(capacity * 2 * w.H), n.resize(capacity * w.H), gh_n.resize(capacity * w.H);
  }

  // The step for the first A sentences' K rows each, from tokens [A·K]: leaves the new state in h, h_t, f, f_t,
  // the attention weights in a and the logits in `logits`.
  void run(const Weights& w, int64_t A, int64_t K, const int64_t* tokens) {
    const int64_t rows = A * K, H = w.H, E = w.E, D = w.D, S = keys.size(1);
    auto first = [&](const Tensor& t) { return t.narrow(0, 0, rows); };
    // out= products into the first rows of a buffer (at::mm_out wants an lvalue)
    auto mm = [&](const Tensor& out, const Tensor& x, const Tensor& y) {
      Tensor view = first(out);
      at::mm_out(view, first(x), y);
    };
    auto addmm = [&](const Tensor& out, const Tensor& bias, const Tensor& x, const Tensor& y) {
      Tensor view = first(out);
      at::addmm_out(view, bias, first(x), y);
    };
    const T* table = ptr<T>(w.embedding);
    T* emb_p = ptr<T>(emb);
    for (int64_t i = 0; i < rows; ++i) std::memcpy(emb_p + i * E, table + tokens[i] * E, E * sizeof(T));
    addmm(gi_e, w.b_ih, emb, w.w_ie_t);
    mm(gi_f, f_t, w.w_if_t);
    mm(gh, h_t, w.w_hh_t);
    const T *gi_e_p = ptr<T>(gi_e), *gi_f_p = ptr<T>(gi_f), *gh_p = ptr<T>(gh);
    float *h_p = ptr<float>(h), *h_next_p = ptr<float>(h_next);
    T* h_t_p = ptr<T>(h_t);
    for (int64_t i = 0; i < rows; ++i)
      gru_row<T, true>(H, gi_e_p + i * 3 * H, gi_f_p + i * 3 * H, gh_p + i * 3 * H, w.b_hh, h_p + i * H,
                       rz.data() + i * 2 * H, n.data() + i * H, gh_n.data() + i * H, h_next_p + i * H,
                       h_t_p + i * H);
    std::swap(h, h_next);
    // Attention by the Python step's operators: the order of their sums decides roundings that the bf16 products
    // after it amplify into other choices, so no hand-fused loop here.
    Tensor scores;
    if (w.energy.defined()) {
      mm(query, h_t, w.w_query_t);
      Tensor energy = at::add(keys.narrow(0, 0, A).unsqueeze(1), first(query).view({A, K, 1, w.Q})).tanh_();
      scores = at::mv(energy.view({-1, w.Q}), w.energy).view({A, K, S});
    } else {
      scores = at::bmm(first(h).view({A, K, H}), keys.narrow(0, 0, A).transpose(1, 2));
    }
    scores.masked_fill_(pad.narrow(0, 0, A).unsqueeze(1), NEG_INF);
    Tensor weights = at::softmax(scores, -1);
    first(a).copy_(weights.view({rows, S}));
    Tensor context = at::bmm(weights, values.narrow(0, 0, A)).view({rows, D});
    if (w.gate_w.defined())  // β = σ(w · h + b) by the Python step's operators too
      context = context * at::sigmoid(at::mv(first(h), w.gate_w).add_(w.gate_b)).unsqueeze(1);
    const float *h_now = ptr<float>(h), *context_p = ptr<float>(context);
    T* joined_p = ptr<T>(joined);
    for (int64_t i = 0; i < rows; ++i) {
      cast_rows(h_now + i * H, joined_p + i * (H + D), H);
      cast_rows(context_p + i * D, joined_p + i * (H + D) + H, D);
    }
    mm(combined, joined, w.w_combine_t);
    const T* combined_p = ptr<T>(combined);
    float* f_p = ptr<float>(f);
    T* f_t_p = ptr<T>(f_t);
    for (int64_t i = 0; i < rows; ++i) {
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float value = fast_tanh(load(combined_p[i * H + j]) + w.b_combine[j]);
        f_p[i * H + j] = value;
        store(f_t_p[i * H + j], value);
      }
    }
    addmm(logits, w.b_out, f_t, w.w_out_t);
  }

  // Sentence `from`'s rows (K of them) and source move to sentence `to` (to < from: gaps close front to back).
  void move(int64_t from, int64_t to, int64_t K) {
    auto rows = [](const Tensor& t, int64_t from, int64_t to, int64_t count) {  // contiguous rows, by bytes
      const int64_t bytes = t.stride(0) * t.element_size();
      auto* base = static_cast<char*>(t.data_ptr());
      std::memcpy(base + to * bytes, base + from * bytes, count * bytes);
    };
    for (const Tensor* t : {&keys, &values, &pad}) rows(*t, from, to, 1);
    for (const Tensor* t : {&h, &f, &h_t, &f_t}) rows(*t, from * K, to * K, K);
  }
};

// One sentence of a part: its live scores and its K best finished hypotheses (best first, -inf where empty).
struct Sentence {
  int64_t id, limit;
  std::vector<float> live, done_norm, done_raw;
  std::vector<int64_t> done_tokens;  // [K, length], EOS included, then padding
  std::vector<float> done_weights;   // [K, length, S] with attention
};

// The search over one part's sentences [begin, end), written into the outputs as each sentence ends.
template <typename T>
class PartSearch {
 public:
  // keys, values, pad: the encoded sources of the part's sentences
  PartSearch(const Weights& w, const Settings& s, const Tensor& keys, const Tensor& values, const Tensor& pad,
             const at::TensorOptions& tt)
      : w_(w), s_(s), K_(s.beam), S_(keys.size(1)), step_(w, keys, values, pad, keys.size(0) * s.beam, tt) {}

  void run(int64_t begin, int64_t end, const float* h0, const float* f0, const int64_t* limits, int64_t* out_tokens,
           float* out_scores, float* out_weights) {
    const int64_t K = K_, H = w_.H, L = s_.length;
    const int64_t count = end - begin, capacity = count * K;
    tokens_.assign(capacity * L, s_.pad);
    weights_.assign(s_.attention ? capacity * L * S_ : 0, 0.0f);
    last_.assign(capacity, s_.bos);
    T *h_t = ptr<T>(step_.h_t), *f_t = ptr<T>(step_.f_t);
    float *h = ptr<float>(step_.h), *f = ptr<float>(step_.f);
    for (int64_t b = 0; b < count; ++b) {
      Sentence one{begin + b, limits[begin + b], std::vector<float>(K, NEG_INF), std::vector<float>(K, NEG_INF),
                   std::vector<float>(K, NEG_INF), std::vector<int64_t>(K * L, s_.pad),
                   std::vector<float>(s_.attention ? K * L * S_ : 0, 0.0f)};
      one.live[0] = 0.0f;  // every beam starts from BOS: keep only the first
      sentences_.push_back(std::move(one));
      for (int64_t k = 0; k < K; ++k) {
        const int64_t row = b * K + k;
        std::memcpy(h + row * H, h0 + (begin + b) * H, H * sizeof(float));
        std::memcpy(f + row * H, f0 + (begin + b) * H, H * sizeof(float));
        cast_rows(h0 + (begin + b) * H, h_t + row * H, H);
        cast_rows(f0 + (begin + b) * H, f_t + row * H, H);
      }
    }
    for (int64_t t = 0; t < L && !sentences_.empty(); ++t) {
      step_.run(w_, sentences_.size(), K, last_.data());
      rank(t);
      std::vector<bool> done(sentences_.size());
      for (size_t slot = 0; slot < sentences_.size(); ++slot) done[slot] = advance(slot, t);
      set_aside(done, out_tokens, out_scores, out_weights);
    }
  }

 private:
  // Each running sentence's best continuations at step t, ranked as s2s.search ranks them, by the same PyTorch
  // operators (log_softmax, max, topk), so that roundings and ties fall alike: greedy search's most likely token, or
  // the best 2K of the sentence's K rows' best 2K each. Fills top_, from_ (the row within the sentence) and token_.
  void rank(int64_t t) {
    const int64_t K = K_, V = w_.V, A = sentences_.size(), rows = A * K, wide = width();
    Tensor lp = at::log_softmax(step_.logits.narrow(0, 0, rows), 1);
    T* lp_p = ptr<T>(lp);
    for (int64_t a = 0; a < A; ++a) {
      if (sentences_[a].limit != t + 1) continue;
      for (int64_t k = 0; k < K; ++k) {  // only EOS is possible at the limit
        T* row = lp_p + (a * K + k) * V;
        const T end = row[s_.eos];
        std::fill(row, row + V, static_cast<T>(NEG_INF));
        row[s_.eos] = end;
      }
    }
    best_value_.resize(rows * wide);
    best_token_.resize(rows * wide);
    for (int64_t row = 0; row < rows; ++row) {
      float* value = best_value_.data() + row * wide;
      int64_t* token = best_token_.data() + row * wide;
      if (distinct_best(V, lp_p + row * V, wide, value, token)) continue;
      // ties: PyTorch's operator decides their order, as it does in s2s.search
      const Tensor one = lp.narrow(0, row, 1);
      auto found = K == 1 ? at::max(one, 1, true) : at::topk(one, wide, 1);
      for (int64_t j = 0; j < wide; ++j) {
        value[j] = load(ptr<T>(std::get<0>(found))[j]);
        token[j] = ptr<int64_t>(std::get<1>(found))[j];
      }
    }
    top_.resize(A * wide);
    from_.resize(A * wide);
    token_.resize(A * wide);
    if (K == 1) {
      for (int64_t a = 0; a < A; ++a) {
        top_[a] = sentences_[a].live[0] + best_value_[a];
        from_[a] = 0;
        token_[a] = best_token_[a];
      }
      return;
    }
    Tensor candidates = at::empty({A, K * wide}, at::kFloat);  // each row's best 2K after its live score
    float* c = ptr<float>(candidates);
    for (int64_t i = 0; i < rows * wide; ++i) c[i] = sentences_[i / (K * wide)].live[(i / wide) % K] + best_value_[i];
    auto chosen = at::topk(candidates, wide, 1);  // [A, 2K]
    const float* score = ptr<float>(std::get<0>(chosen));
    const int64_t* id = ptr<int64_t>(std::get<1>(chosen));
    for (int64_t i = 0; i < A * wide; ++i) {
      const int64_t a = i / wide;
      top_[i] = score[i];
      from_[i] = id[i] / wide;
      token_[i] = best_token_[a * K * wide + id[i]];
    }
  }

  // How many continuations of a sentence are ranked: 2K (one for greedy search, which keeps the best).
  int64_t width() const { return K_ == 1 ? 1 : 2 * K_; }

  // Step t of one sentence, after `rank`: retire its continuations that end, reorder its rows to the K that live on.
  // Returns whether the sentence is done.
  bool advance(size_t slot, int64_t t) {
    const int64_t K = K_, first_row = slot * K, wide = width();
    Sentence& one = sentences_[slot];
    const float* top = top_.data() + slot * wide;
    const int64_t *from = from_.data() + slot * wide, *token = token_.data() + slot * wide;
    retire(one, top, from, token, first_row, t);
    // the best K that do not end live on, in rank order (then, if too few, those that end: the sentence is done)
    std::vector<int64_t> keep;
    for (int pass = 0; pass < 2; ++pass)
      for (int64_t rank = 0; rank < wide && static_cast<int64_t>(keep.size()) < K; ++rank)
        if ((token[rank] == s_.eos) == (pass == 1)) keep.push_back(rank);
    std::vector<int64_t> rows(K), next(K);
    for (int64_t k = 0; k < K; ++k) {
      one.live[k] = top[keep[k]];
      rows[k] = first_row + from[keep[k]];
      next[k] = token[keep[k]];
    }
    reorder(first_row, rows, next, t);
    return std::isfinite(one.done_norm[K - 1]) || one.limit == t + 1;
  }

  // The continuations among the first K that end (EOS) join the sentence's finished hypotheses: the best K of the
  // finished and the new ones by normalised score, picked by topk as s2s.search picks them.
  void retire(Sentence& one, const float* top, const int64_t* from, const int64_t* token, int64_t first_row,
              int64_t t) {
    const int64_t K = K_, L = s_.length, S = S_, wide = width();
    const float penalty = static_cast<float>(std::pow((5.0 + (t + 1)) / 6.0, s_.alpha));
    Tensor all = at::empty({K + wide}, at::kFloat);
    float* norm = ptr<float>(all);
    std::copy_n(one.done_norm.data(), K, norm);
    bool any = false;
    for (int64_t rank = 0; rank < wide; ++rank) {
      const bool ends = token[rank] == s_.eos && rank < K && std::isfinite(top[rank]);
      norm[K + rank] = ends ? top[rank] / penalty : NEG_INF;
      any = any || ends;
    }
    if (!any) return;
    const Tensor best = std::get<1>(at::topk(all, K));
    Sentence merged{one.id, one.limit, one.live, std::vector<float>(K), std::vector<float>(K),
                    std::vector<int64_t>(K * L, s_.pad), std::vector<float>(one.done_weights.size(), 0.0f)};
    for (int64_t j = 0; j < K; ++j) {
      const int64_t pick = ptr<int64_t>(best)[j];
      merged.done_norm[j] = norm[pick];
      int64_t* tokens = merged.done_tokens.data() + j * L;
      float* weights = s_.attention ? merged.done_weights.data() + j * L * S : nullptr;
      if (pick < K) {  // finished before
        merged.done_raw[j] = one.done_raw[pick];
        std::copy_n(one.done_tokens.data() + pick * L, L, tokens);
        if (weights) std::copy_n(one.done_weights.data() + pick * L * S, L * S, weights);
        continue;
      }
      const int64_t rank = pick - K, row = first_row + from[rank];
      merged.done_raw[j] = std::isfinite(norm[pick]) ? top[rank] : NEG_INF;
      if (!std::isfinite(norm[pick])) continue;  // an empty slot
      std::copy_n(tokens_.data() + row * L, t, tokens);
      tokens[t] = s_.eos;
      if (weights) {
        std::copy_n(weights_.data() + row * L * S, t * S, weights);
        std::copy_n(ptr<float>(step_.a) + row * S, S, weights + t * S);
      }
    }
    one = std::move(merged);
  }

  // Rows [first_row, first_row + K) become the continuations of rows `from` by `token`: state, history, weights.
  void reorder(int64_t first_row, const std::vector<int64_t>& from, const std::vector<int64_t>& token, int64_t t) {
    const int64_t K = K_, H = w_.H, L = s_.length, S = S_;
    T *h_t = ptr<T>(step_.h_t), *f_t = ptr<T>(step_.f_t);
    float *h = ptr<float>(step_.h), *f = ptr<float>(step_.f), *a = ptr<float>(step_.a);
    const int64_t history = t * S;
    held_.resize(K * 2 * H);
    held_t_.resize(K * 2 * H);
    held_tokens_.resize(K * L);
    held_weights_.resize(s_.attention ? K * (history + S) : 0);
    for (int64_t k = 0; k < K; ++k) {  // copy the sources out first: a row may be another's source
      const int64_t row = from[k];
      std::copy_n(h + row * H, H, held_.data() + k * 2 * H);
      std::copy_n(f + row * H, H, held_.data() + k * 2 * H + H);
      std::copy_n(h_t + row * H, H, held_t_.data() + k * 2 * H);
      std::copy_n(f_t + row * H, H, held_t_.data() + k * 2 * H + H);
      std::copy_n(tokens_.data() + row * L, t, held_tokens_.data() + k * L);
      if (s_.attention) {
        std::copy_n(weights_.data() + row * L * S, history, held_weights_.data() + k * (history + S));
        std::copy_n(a + row * S, S, held_weights_.data() + k * (history + S) + history);
      }
    }
    for (int64_t k = 0; k < K; ++k) {
      const int64_t row = first_row + k;
      std::copy_n(held_.data() + k * 2 * H, H, h + row * H);
      std::copy_n(held_.data() + k * 2 * H + H, H, f + row * H);
      std::copy_n(held_t_.data() + k * 2 * H, H, h_t + row * H);
      std::copy_n(held_t_.data() + k * 2 * H + H, H, f_t + row * H);
      std::copy_n(held_tokens_.data() + k * L, t, tokens_.data() + row * L);
      tokens_[row * L + t] = token[k];
      last_[row] = token[k];
      if (s_.attention)
        std::copy_n(held_weights_.data() + k * (history + S), history + S, weights_.data() + row * L * S);
    }
  }

  // Write the done sentences' best hypotheses out and close the gaps they leave (the others keep their order).
  void set_aside(const std::vector<bool>& done, int64_t* out_tokens, float* out_scores, float* out_weights) {
    const int64_t K = K_, L = s_.length, S = S_, N = s_.nbest;
    size_t kept = 0;
    for (size_t slot = 0; slot < sentences_.size(); ++slot) {
      Sentence& one = sentences_[slot];
      if (done[slot]) {
        std::copy_n(one.done_tokens.data(), N * L, out_tokens + one.id * N * L);
        std::copy_n(one.done_raw.data(), N, out_scores + one.id * N);
        if (s_.attention) std::copy_n(one.done_weights.data(), N * L * S, out_weights + one.id * N * L * S);
        continue;
      }
      if (kept != slot) {
        const int64_t to = kept * K, from = slot * K;
        sentences_[kept] = std::move(one);
        step_.move(slot, kept, K);
        std::copy_n(tokens_.data() + from * L, K * L, tokens_.data() + to * L);
        std::copy_n(last_.data() + from, K, last_.data() + to);
        if (s_.attention) std::copy_n(weights_.data() + from * L * S, K * L * S, weights_.data() + to * L * S);
      }
      ++kept;
    }
    sentences_.resize(kept);
  }

  const Weights& w_;
  const Settings& s_;
  const int64_t K_, S_;
  Step<T> step_;
  std::vector<Sentence> sentences_;
  std::vector<int64_t> tokens_, last_, held_tokens_;  // tokens_: [rows, length]
  std::vector<float> weights_, held_, held_weights_;              // weights_: [rows, length, S]
  std::vector<float> best_value_, top_;  // each row's best, and `rank`'s choices: [sentences, width()]
  std::vector<int64_t> best_token_, from_, token_;
  std::vector<T> held_t_;
};

template <typename T>
std::vector<Tensor> search_impl(const Weights& w, const Settings& s, const Tensor& keys, const Tensor& values,
                                const Tensor& mask, const Tensor& h0, const Tensor& f0, const Tensor& limit,
                                int64_t parts) {
  const int64_t B = h0.size(0), N = s.nbest, L = s.length;
  const auto tt = w.w_hh_t.options();
  auto tokens = at::full({B, N, L}, s.pad, limit.options());
  auto scores = at::full({B, N}, NEG_INF, h0.options());
  auto weights = at::zeros({s.attention ? B : 0, N, L, keys.size(1)}, h0.options());
  const Tensor pad = mask.logical_not();
  const float *h0_p = ptr<float>(h0), *f0_p = ptr<float>(f0);
  const int64_t* limits = ptr<int64_t>(limit);
  int64_t* tokens_p = ptr<int64_t>(tokens);
  float *scores_p = ptr<float>(scores), *weights_p = s.attention ? ptr<float>(weights) : nullptr;
  for_each_part(1, B, parts, [&](Part p) {
    // the products' dtypes are the caller's choice (T): autocast, which the caller may have on, stays out
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto part = [&](const Tensor& t) { return t.narrow(0, p.begin, p.rows()); };
    PartSearch<T> search(w, s, part(keys), part(values), part(pad), tt);
    search.run(p.begin, p.end, h0_p, f0_p, limits, tokens_p, scores_p, weights_p);
  });
  return {tokens, scores, weights};
}

std::vector<Tensor> fed_attention_search(const Tensor& keys, const Tensor& values, const Tensor& mask,
                                         const Tensor& h0, const Tensor& f0, const Tensor& limit,
                                         const Tensor& embedding, const Tensor& w_ie, const Tensor& b_ih,
                                         const Tensor& w_if, const Tensor& w_hh, const Tensor& b_hh,
                                         const c10::optional<Tensor>& w_query, const c10::optional<Tensor>& energy,
                                         const Tensor& w_combine, const Tensor& b_combine,
                                         const c10::optional<Tensor>& gate_w, const c10::optional<Tensor>& gate_b,
                                         const Tensor& w_out, const Tensor& b_out, int64_t beam, double alpha,
                                         int64_t nbest, bool attention, int64_t bos, int64_t eos, int64_t pad,
                                         int64_t parts) {
  check({keys, values, h0, f0, b_hh, b_combine}, {embedding, w_ie, b_ih, w_if, w_hh, w_combine, w_out, b_out}, w_hh);
  if (energy.has_value()) check({*energy}, {*w_query}, w_hh);
  TORCH_CHECK(gate_w.has_value() == gate_b.has_value(), "a context gate has a weight and a bias");
  if (gate_w.has_value()) check({*gate_w, *gate_b}, {}, w_hh);
  TORCH_CHECK(mask.scalar_type() == at::kBool && mask.is_contiguous(), "the mask is a contiguous bool tensor");
  TORCH_CHECK(limit.scalar_type() == at::kLong && limit.is_contiguous() && limit.numel() == h0.size(0),
              "limit: one int64 length per sentence");
  TORCH_CHECK(beam >= 1 && nbest >= 1 && nbest <= beam, "1 <= nbest <= beam");
  TORCH_CHECK(w_out.size(0) >= 2 * beam, "a beam of ", beam, " needs a vocabulary of at least ", 2 * beam);
  const int64_t length = h0.size(0) ? limit.max().item<int64_t>() : 0;
  TORCH_CHECK(h0.size(0) == 0 || limit.min().item<int64_t>() >= 1, "every limit is at least 1");
  Weights w{embedding,
            w_ie.t(),
            b_ih,
            w_if.t(),
            w_hh.t(),
            energy.has_value() ? w_query->t() : Tensor(),
            w_combine.t(),
            w_out.t(),
            b_out,
            energy.has_value() ? *energy : Tensor(),
            gate_w.has_value() ? *gate_w : Tensor(),
            gate_b.has_value() ? *gate_b : Tensor(),
            ptr<float>(b_hh),
            ptr<float>(b_combine),
            w_out.size(0),
            embedding.size(1),
            w_hh.size(1),
            keys.size(2),
            values.size(2)};
  Settings s{beam, nbest, length, alpha, attention, bos, eos, pad};
  return with_matmul_type(w_hh, [&](auto type) {
    return search_impl<decltype(type)>(w, s, keys, values, mask, h0, f0, limit, parts);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(s2s_kernels, m) {
  m.def(
      "fed_attention_search(Tensor keys, Tensor values, Tensor mask, Tensor h0, Tensor f0, Tensor limit, "
      "Tensor embedding, Tensor w_ie, Tensor b_ih, Tensor w_if, Tensor w_hh, Tensor b_hh, Tensor? w_query, "
      "Tensor? energy, Tensor w_combine, Tensor b_combine, Tensor? gate_w, Tensor? gate_b, Tensor w_out, "
      "Tensor b_out, int beam, float alpha, "
      "int nbest, bool attention, int bos, int eos, int pad, int parts) -> Tensor[]",
      &fed_attention_search);
}
