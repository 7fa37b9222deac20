// Vectorised exp/log over contiguous arrays. The EM loops spend most of their time in transcendentals
// (one exp per task × class per E-step, one log per confusion cell per M-step); glibc's scalar calls
// do not vectorise, so these loops live in vmath.cpp, compiled apart with -ffast-math so that GCC calls
// glibc's libmvec SIMD variants (≤ 4 ulp), with AVX-512 and AVX2 clones chosen at load time. (The file is built
// without LTO: at link time LTO dropped the per-file -ffast-math and with it every libmvec call.)
// libmvec returns what glibc does for -inf and 0 (exp(-inf) = 0, log(0) = -inf); the loops do no arithmetic of
// their own that -ffinite-math-only could change.
#pragma once

#include <cstdint>

namespace luab {

void vexp(double* x, int64_t n);                      // x[i] = exp(x[i])
void vexp(const double* x, double* out, int64_t n);   // out[i] = exp(x[i]), the same values
void vexp(float* x, int64_t n);                       // x[i] = expf(x[i])
void vlog(const double* x, double* out, int64_t n);   // out[i] = log(x[i])

}  // namespace luab
