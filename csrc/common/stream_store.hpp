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

namespace detail {
#if defined(__SSE2__)
// One 16-byte non-temporal store of dst[0..16/sizeof(D)) = src[...], converted to D.
inline void stream16(float* dst, const double* src) {
  _mm_stream_ps(dst, _mm_set_ps(static_cast<float>(src[3]), static_cast<float>(src[2]), static_cast<float>(src[1]),
                                static_cast<float>(src[0])));
}
inline void stream16(double* dst, const double* src) { _mm_stream_pd(dst, _mm_loadu_pd(src)); }
inline void stream16(float* dst, const float* src) { _mm_stream_ps(dst, _mm_loadu_ps(src)); }
#endif
}  // namespace detail

// dst[i] = D(src[i]): a posterior row computed in double (D = TP), or a log θ block built in a cache-resident
// scratch (S = D = TL). An unaligned dst (K·sizeof(D) not a multiple of 16) falls back to plain stores.
template <typename D, typename S>
inline void stream_store(D* dst, const S* src, int64_t n) {
  int64_t i = 0;
#if defined(__SSE2__)
  constexpr int64_t kStep = 16 / sizeof(D);
  if ((reinterpret_cast<uintptr_t>(dst) & 15) == 0)
    for (; i + kStep <= n; i += kStep) detail::stream16(dst + i, src + i);
#endif
  for (; i < n; ++i) dst[i] = static_cast<D>(src[i]);
}

inline void store_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

}  // namespace luab
