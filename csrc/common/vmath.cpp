// Compiled with -ffast-math (see CMakeLists.txt): only these element-wise loops, no reductions, so
// fast-math changes nothing here but which exp/log implementation is called.
#include "vmath.hpp"

#include <cmath>

namespace luab {

__attribute__((target_clones("avx2", "default"))) void vexp(double* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

__attribute__((target_clones("avx2", "default"))) void vlog(const double* x, double* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = std::log(x[i]);
}

}  // namespace luab
