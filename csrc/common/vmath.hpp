// Vectorised exp/log over contiguous arrays. The EM loops spend most of their time in transcendentals
// (one exp per task × class per E-step, one log per confusion cell per M-step); glibc's scalar calls
// do not vectorise, so these loops live in vmath.cpp, compiled apart with -ffast-math so that GCC calls
// glibc's libmvec SIMD variants (≤ 4 ulp), with an AVX2 clone chosen at load time where the CPU has it.
// Inputs must be finite (exp) and finite and > 0 (log); every caller guarantees it.
#pragma once

#include <cstdint>

namespace luab {

void vexp(double* x, int64_t n);                      // x[i] = exp(x[i])
void vexp(float* x, int64_t n);                       // x[i] = expf(x[i])
void vlog(const double* x, double* out, int64_t n);   // out[i] = log(x[i])

}  // namespace luab
