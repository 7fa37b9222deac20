// Compiled with -ffast-math (see CMakeLists.txt): only these element-wise loops, no reductions, so
// fast-math changes nothing here but which exp/log implementation is called.
//
// Every element goes through the same SIMD call, the tail included (copied into a padded block): a
// vectorised body with a scalar remainder would give two ulp-different answers for one input depending on
// where it sits in the array, and the hard-EM M-step's argmax must see equal inputs stay equal (ties).
#include "vmath.hpp"

#include <cmath>

namespace luab {
namespace {

constexpr int64_t kBlock = 8;  // one AVX-512 vector of doubles, two AVX2 ones, four SSE2 ones

template <typename T, typename F>
inline void blocked(const T* x, T* out, int64_t n, T pad, F&& f) {
  int64_t i = 0;
  for (; i + kBlock <= n; i += kBlock) f(x + i, out + i);
  if (i < n) {
    T in[kBlock], res[kBlock];
    for (int64_t u = 0; u < kBlock; ++u) in[u] = i + u < n ? x[i + u] : pad;
    f(in, res);
    for (int64_t u = 0; i + u < n; ++u) out[i + u] = res[u];
  }
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default"))) void vexp(double* x, int64_t n) {
  blocked<double>(x, x, n, 0.0, [](const double* in, double* out) {
#pragma omp simd
    for (int64_t u = 0; u < kBlock; ++u) out[u] = std::exp(in[u]);
  });
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void vexp(const double* x, double* out, int64_t n) {
  blocked<double>(x, out, n, 0.0, [](const double* in, double* res) {
#pragma omp simd
    for (int64_t u = 0; u < kBlock; ++u) res[u] = std::exp(in[u]);
  });
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void vexp(float* x, int64_t n) {
  blocked<float>(x, x, n, 0.0f, [](const float* in, float* out) {
#pragma omp simd
    for (int64_t u = 0; u < kBlock; ++u) out[u] = std::exp(in[u]);
  });
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void vlog(const double* x, double* out, int64_t n) {
  blocked<double>(x, out, n, 1.0, [](const double* in, double* res) {
#pragma omp simd
    for (int64_t u = 0; u < kBlock; ++u) res[u] = std::log(in[u]);
  });
}

}  // namespace luab
