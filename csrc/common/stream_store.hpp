// Non-temporal ("streaming") stores for the EM tables that one pass writes in full and only a later pass reads:
// the posterior rows (E-step) and the log θ table (M-step). Written through the caches, each line would first be
// read from memory (read-for-ownership) and would then evict what the pass is reading at random (log θ rows in
// the E-step, from a table about the size of L3). x86 (SSE2) only; elsewhere these are plain stores.
//
// Streaming stores are weakly ordered: every thread that issues them calls store_fence() before the parallel
// region's closing barrier, after which other threads read what was written.
#pragma once

#include <cstdint>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace luab {

// dst[i] = TP(src[i]) for a row computed in double.
inline void stream_store(float* dst, const double* src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0)
    for (; i + 4 <= n; i += 4)
      _mm_stream_ps(dst + i, _mm_set_ps(static_cast<float>(src[i + 3]), static_cast<float>(src[i + 2]),
                                        static_cast<float>(src[i + 1]), static_cast<float>(src[i])));
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void stream_store(double* dst, const double* src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0)
    for (; i + 2 <= n; i += 2) _mm_stream_pd(dst + i, _mm_loadu_pd(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

// dst[i] = src[i] for a table block built in a cache-resident scratch.
inline void stream_store(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0)
    for (; i + 4 <= n; i += 4) _mm_stream_ps(dst + i, _mm_loadu_ps(src + i));
#endif
  for (; i < n; ++i) dst[i] = src[i];
}

inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace luab
