// numpy's and pandas' float64 sums, in their summation order, so that the engines that reproduce crowd-kit's pandas
// code (KOS's messages, M-MSR's covariation row sums and weighted vote) get its results bit for bit: numpy's
// pairwise summation, and the two algorithms pandas' groupby(...).sum() picks between.
#pragma once

#include <cmath>
#include <cstdint>

namespace luab::aggregate {

// numpy's pairwise summation of a float64 run (its add reduction over a contiguous array): runs of up to 128
// values in 8 interleaved sums, longer runs split in two at a multiple of 8. `at(i)` reads value i of the run, so a
// run can be gathered on the fly (no copy).
template <typename At>
double numpy_pairwise_sum(const At& at, int64_t begin, int64_t n) {
  if (n < 8) {
    double res = -0.0;
    for (int64_t i = 0; i < n; ++i) res += at(begin + i);
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int u = 0; u < 8; ++u) r[u] = at(begin + u);
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int u = 0; u < 8; ++u) r[u] += at(begin + i + u);
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += at(begin + i);
    return res;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return numpy_pairwise_sum(at, begin, half) + numpy_pairwise_sum(at, begin + half, n - half);
}

inline double numpy_pairwise_sum(const double* a, int64_t n) {
  return numpy_pairwise_sum([a](int64_t i) { return a[i]; }, 0, n);
}

// One step of pandas' Cython Kahan group sum: NaN skipped, the compensation reset when it stops being finite
// (pandas GH#53606). Needs IEEE arithmetic (no -ffast-math, no contraction), which the aggregate sources have.
inline void kahan_add(double value, double& sum, double& compensation) {
  if (value != value) return;
  const double y = value - compensation;
  const double t = sum + y;
  compensation = t - sum - y;
  if (!std::isfinite(compensation)) compensation = 0.0;
  sum = t;
}

// pandas 3's groupby(...).sum() of one group's float64 values at(0..n), in row order (crowd-kit sums every message
// that way). pandas picks the algorithm per call: when the rows come sorted by the group key (`in_runs`) and hold
// no NaN it takes np.add.reduceat (the first value plus numpy's pairwise sum of the rest), otherwise its Cython
// Kahan loop.
template <typename At>
double pandas_group_sum(const At& at, int64_t n, bool in_runs) {
  if (in_runs) return n == 0 ? 0.0 : at(0) + numpy_pairwise_sum(at, 1, n - 1);
  double sum = 0.0, compensation = 0.0;
  for (int64_t i = 0; i < n; ++i) kahan_add(at(i), sum, compensation);
  return sum;
}

}  // namespace luab::aggregate
