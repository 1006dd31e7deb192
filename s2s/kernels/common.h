// What the kernels share: fast vectorizable tanh and exp, fp32 <-> T conversions, and the split of a batch's rows
// into parts, one per thread.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace s2s_kernels {

using at::Tensor;

// tanh as a rational function (degree 13 over 6 in x, the form Eigen uses): the compiler vectorizes loops of it,
// which it cannot do for std::tanh. Clamped at ±7.9, where tanh is 1 - 2.7e-7; measured against double-precision
// tanh over [-20, 20], the error is at most 2.7e-7, absolute and relative.
inline float fast_tanh(float x) {
  constexpr float limit = 7.90531110763549805f;
  x = std::min(std::max(x, -limit), limit);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

inline float fast_sigmoid(float x) { return 0.5f + 0.5f * fast_tanh(0.5f * x); }

// Conversions between fp32 and T without branches, so that loops of them vectorize (c10's BFloat16 conversion
// tests for NaN with a branch). Rounding is to nearest even, NaN stays NaN: what c10 does.
inline float load(const float& v) { return v; }
inline float load(const c10::BFloat16& v) {  // by reference: a copy of the struct stops the vectorizer
  const uint32_t bits = static_cast<uint32_t>(reinterpret_cast<const uint16_t&>(v)) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline void store(float& to, float v) { to = v; }
inline void store(c10::BFloat16& to, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits = v != v ? 0x7FC00000u : bits + 0x7FFFu + ((bits >> 16) & 1u);
  reinterpret_cast<uint16_t&>(to) = static_cast<uint16_t>(bits >> 16);
}

// What each part computes: rows [begin, end) of direction `direction`.
struct Part {
  int64_t index, direction, begin, end;
  int64_t rows() const { return end - begin; }
};

// Split `directions` × `batch` rows into about `parts` pieces and run `body` on each, one piece per thread.
template <typename Body>
void for_each_part(int64_t directions, int64_t batch, int64_t parts, const Body& body) {
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(batch, parts / directions));
  const int64_t count = directions * blocks;
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    // the workers are not the caller's thread: no autograd there, and none wanted (out= products of plain buffers)
    c10::impl::ExcludeDispatchKeyGuard no_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
    for (int64_t p = first; p < last; ++p) {
      const int64_t block = p % blocks, size = (batch + blocks - 1) / blocks;
      const int64_t begin = std::min(batch, block * size), end = std::min(batch, begin + size);
      if (begin < end) body(Part{p, p / blocks, begin, end});
    }
  });
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.data_ptr<T>();
}

// exp by range reduction (x = n ln 2 + r, |r| ≤ ln 2 / 2) and Cephes' degree-6 polynomial for e^r, within 1.4 ulp of
// double-precision exp over [-87, 0] (measured); vectorizable, unlike std::exp. Below -87 it returns exp(-87), about
// 1.6e-38, instead of a subnormal: a probability that small counts as 0.
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  // n = round(x / ln 2) by the 1.5 · 2^23 trick: plain arithmetic, which vectorizes where std::floor does not
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return (p * r * r + r + 1.0f) * scale;
}

// The sum and the maximum of x[0, n), 16 lanes at a time: GCC does not vectorize float reductions by itself
// (reassociation changes the rounding), not even under `omp simd reduction` for a max next to a sum.
inline void sum_and_max(const float* __restrict__ x, int64_t n, float& sum, float& top) {
  constexpr int64_t lanes = 16;
  float sums[lanes] = {}, tops[lanes];
  std::fill(tops, tops + lanes, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (int64_t k = 0; k < lanes; ++k) {
      sums[k] += x[i + k];
      tops[k] = std::max(tops[k], x[i + k]);
    }
  for (; i < n; ++i) {
    sums[0] += x[i];
    tops[0] = std::max(tops[0], x[i]);
  }
  sum = 0.0f;
  top = -std::numeric_limits<float>::infinity();
  for (int64_t k = 0; k < lanes; ++k) {
    sum += sums[k];
    top = std::max(top, tops[k]);
  }
}

// Σ term(i) over i in [0, n), 16 lanes at a time (see sum_and_max).
template <typename Term>
inline float lane_sum(int64_t n, const Term& term) {
  constexpr int64_t lanes = 16;
  float sums[lanes] = {};
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes)
    for (int64_t k = 0; k < lanes; ++k) sums[k] += term(i + k);
  for (; i < n; ++i) sums[0] += term(i);
  float sum = 0.0f;
  for (int64_t k = 0; k < lanes; ++k) sum += sums[k];
  return sum;
}

// The kernels' operands: activations fp32, gates and weights in the products' dtype (`weight`'s), all contiguous.
inline void check(const std::vector<Tensor>& fp32, const std::vector<Tensor>& in_t, const Tensor& weight) {
  const auto type = weight.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kBFloat16, "s2s kernels multiply in fp32 or bf16");
  for (const auto& t : fp32)
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous(),
                "s2s kernels take contiguous fp32 CPU activations");
  for (const auto& t : in_t)
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.is_contiguous(),
                "s2s kernels take gates and weights contiguous, in the products' dtype");
}

// Runs `body` with a value of the products' element type (float or c10::BFloat16), chosen by `weight`'s dtype.
template <typename Body>
std::vector<Tensor> with_matmul_type(const Tensor& weight, const Body& body) {
  if (weight.scalar_type() == at::kBFloat16) return body(c10::BFloat16());
  return body(0.0f);
}

}  // namespace s2s_kernels
