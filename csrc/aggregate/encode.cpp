#include "encode.hpp"

#include <algorithm>
#include <cstdint>

namespace luab::aggregate {

bool factorize_integers(const int64_t* values, int64_t n, bool sorted, int64_t* codes,
                        std::vector<int64_t>& uniques) {
  uniques.clear();
  if (n == 0) return true;
  const auto [lo_it, hi_it] = std::minmax_element(values, values + n);
  const int64_t lo = *lo_it, hi = *hi_it;
  // hi - lo overflows for ids at both ends of int64; such inputs go to the hash path
  if (lo < 0 && hi > INT64_MAX + lo) return false;
  const int64_t range = hi - lo + 1;
  if (range > max_factorize_range(n)) return false;
  if (n > INT32_MAX) return false;  // the table holds int32 codes: more values than that go to the hash path
  std::vector<int32_t> code_of(static_cast<size_t>(range), -1);
  if (!sorted) {
    for (int64_t i = 0; i < n; ++i) {
      int32_t& c = code_of[static_cast<size_t>(values[i] - lo)];
      if (c < 0) {
        c = static_cast<int32_t>(uniques.size());
        uniques.push_back(values[i]);
      }
      codes[i] = c;
    }
    return true;
  }
  for (int64_t i = 0; i < n; ++i) code_of[static_cast<size_t>(values[i] - lo)] = 0;  // present
  for (int64_t v = 0; v < range; ++v) {
    if (code_of[static_cast<size_t>(v)] < 0) continue;
    code_of[static_cast<size_t>(v)] = static_cast<int32_t>(uniques.size());
    uniques.push_back(lo + v);
  }
  for (int64_t i = 0; i < n; ++i) codes[i] = code_of[static_cast<size_t>(values[i] - lo)];
  return true;
}

template <typename T>
void argmax_rows(const T* x, int64_t rows, int64_t k, int64_t* out, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const T* r = x + i * k;
    // the maximum in independent lanes (vectorises), then the first position holding it
    constexpr int64_t kLanes = 16;
    T lanes[kLanes];
    bool nan = false;
    for (int64_t u = 0; u < kLanes; ++u) lanes[u] = r[0];
    int64_t y = 0;
    for (; y + kLanes <= k; y += kLanes)
      for (int64_t u = 0; u < kLanes; ++u) {
        lanes[u] = std::max(lanes[u], r[y + u]);
        nan |= r[y + u] != r[y + u];
      }
    for (; y < k; ++y) {
      lanes[0] = std::max(lanes[0], r[y]);
      nan |= r[y] != r[y];
    }
    T m = lanes[0];
    for (int64_t u = 1; u < kLanes; ++u) m = std::max(m, lanes[u]);
    int64_t best = 0;
    if (nan) {  // numpy's answer for a row with a NaN: its first NaN
      while (r[best] == r[best]) ++best;
    } else {
      while (r[best] != m) ++best;  // found: m is one of the row's values
    }
    out[i] = best;
  }
}

template void argmax_rows<float>(const float*, int64_t, int64_t, int64_t*, int);
template void argmax_rows<double>(const double*, int64_t, int64_t, int64_t*, int);

}  // namespace luab::aggregate
