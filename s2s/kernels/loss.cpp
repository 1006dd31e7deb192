// The label-smoothed cross-entropy of s2s.loss over a batch's [N, V] logits, and its gradient, in one pass per row.
//
// PyTorch's softmax, the picks of the target logits and the column sums for the bias gradient each read the whole
// [N, V] matrix (8M values a batch here); this loop reads a row once into a buffer the size of one row, which stays
// in cache, and leaves in place of the logits the gradient the two backward products need:
//
//     G = softmax(x) - (1 - ε) onehot(y) - ε / V,     loss = Σ_n  lse_n - (1 - ε) x_ny - ε mean_v x_nv
//
// with x = logits + bias and lse the log-sum-exp of a row (PyTorch's definition of label smoothing). Rows past the
// targets (padding that keeps oneDNN's kernel shapes few) get G = 0. The rows are split into parts, one per thread,
// each with its own sum of G's columns (the bias gradient), added up at the end.

#include <torch/library.h>

#include <limits>

#include "common.h"

namespace {

using namespace s2s_kernels;

// One row: the loss, and G written over the logits; the row's G added to column_sums. x: a buffer of V floats.
template <typename T>
inline double cross_entropy_row(int64_t V, int64_t target, float eps, T* __restrict__ row, const float* __restrict__ b,
                                float* __restrict__ x, float* __restrict__ column_sums) {
  float top, sum, total, ignored;
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) x[v] = load(row[v]) + b[v];
  sum_and_max(x, V, sum, top);
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) x[v] = fast_exp(x[v] - top);
  sum_and_max(x, V, total, ignored);
  const float target_logit = load(row[target]) + b[target], lse = top + std::log(total), scale = 1.0f / total;
  const float spread = eps / static_cast<float>(V);
#pragma omp simd
  for (int64_t v = 0; v < V; ++v) {
    const float g = x[v] * scale - spread;
    store(row[v], g);
    column_sums[v] += g;
  }
  store(row[target], x[target] * scale - spread - (1.0f - eps));
  column_sums[target] -= 1.0f - eps;
  return lse - (1.0f - eps) * target_logit - eps * sum / static_cast<float>(V);
}

template <typename T>
std::vector<Tensor> cross_entropy_impl(const Tensor& logits, const Tensor& bias, const Tensor& target,
                                       double smoothing, int64_t parts) {
  const int64_t rows = logits.size(0), V = logits.size(1), count = target.size(0);
  const float eps = static_cast<float>(smoothing);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(rows, parts));
  auto d_bias = at::zeros({blocks, V}, bias.options());
  auto losses = at::zeros({blocks}, bias.options().dtype(at::kDouble));
  T* g_p = ptr<T>(logits);
  const float* b = ptr<float>(bias);
  const int64_t* y = ptr<int64_t>(target);
  for_each_part(1, rows, blocks, [&](Part p) {
    std::vector<float> buffer(V);  // one row of x, then of its exps: stays in cache
    double loss = 0.0;
    for (int64_t n = p.begin; n < p.end; ++n) {
      if (n < count) {
        loss += cross_entropy_row<T>(V, y[n], eps, g_p + n * V, b, buffer.data(), ptr<float>(d_bias) + p.index * V);
      } else {
        std::fill(g_p + n * V, g_p + (n + 1) * V, T(0.0f));
      }
    }
    ptr<double>(losses)[p.index] = loss;
  });
  return {losses.sum().to(at::kFloat), d_bias.sum(0)};
}

// logits [N', V] (x Wᵀ without the bias, in the products' dtype; overwritten with G), bias [V], target [N ≤ N']
// → the summed loss (a scalar), the bias gradient Σ_n G_n [V]
std::vector<Tensor> cross_entropy_gradient(const Tensor& logits, const Tensor& bias, const Tensor& target,
                                           double smoothing, int64_t parts) {
  TORCH_CHECK(logits.device().is_cpu() && logits.dim() == 2 && logits.is_contiguous(),
              "the logits are a contiguous [N, V] CPU matrix");
  TORCH_CHECK(bias.scalar_type() == at::kFloat && bias.is_contiguous() && bias.size(0) == logits.size(1),
              "the bias is a contiguous fp32 vector of V");
  TORCH_CHECK(target.scalar_type() == at::kLong && target.is_contiguous() && target.size(0) <= logits.size(0),
              "the targets are a contiguous int64 vector of at most N");
  const int64_t* y = target.data_ptr<int64_t>();
  for (int64_t n = 0; n < target.size(0); ++n)
    TORCH_CHECK(y[n] >= 0 && y[n] < logits.size(1), "target ", y[n], " is outside the vocabulary of ", logits.size(1));
  return with_matmul_type(logits, [&](auto type) {
    return cross_entropy_impl<decltype(type)>(logits, bias, target, smoothing, parts);
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(s2s_kernels, m) {
  m.def(
      "cross_entropy_gradient(Tensor(a!) logits, Tensor bias, Tensor target, float smoothing, int parts) -> Tensor[]",
      &cross_entropy_gradient);
}
