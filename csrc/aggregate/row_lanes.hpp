// Row helpers of the EM steps: reductions over one K-row in kLanes independent sums (a single running sum is a
// chain of dependent adds that neither vectorises nor pipelines). Each helper fixes its summation order, so
// results do not depend on the thread count, and the fused ones (finish_row, add_rows) give bit for bit what
// the separate passes they replace give.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace luab::aggregate {

// Row reductions in kLanes independent chains (one chain of dependent adds or maxes over K = 100 costs ~4
// cycles per element and does not vectorise; lanes do). The order is fixed, so results do not depend on threads.
constexpr int64_t kLanes = 8;

inline double lane_max(const double* x, int64_t n) {
  double lanes[kLanes];
  for (int64_t u = 0; u < kLanes; ++u) lanes[u] = x[0];
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes)
    for (int64_t u = 0; u < kLanes; ++u) lanes[u] = std::max(lanes[u], x[y + u]);
  for (; y < n; ++y) lanes[0] = std::max(lanes[0], x[y]);
  double m = lanes[0];
  for (int64_t u = 1; u < kLanes; ++u) m = std::max(m, lanes[u]);
  return m;
}

// Σ_y f(x, y)
template <typename F>
inline double lane_sum(const double* x, int64_t n, F&& f) {
  double lanes[kLanes] = {};
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes)
    for (int64_t u = 0; u < kLanes; ++u) lanes[u] += f(x, y + u);
  for (; y < n; ++y) lanes[y % kLanes] += f(x, y);
  double s = 0.0;
  for (int64_t u = 0; u < kLanes; ++u) s += lanes[u];
  return s;
}

// −(the E-step's entropy term): Σ_y (p[y] >= clip ? p[y] · (sh[y] − log_s) : clip_term), summed exactly as
// lane_sum would (kLanes lanes, the tail into lane y % kLanes). Written with a vector type because GCC left the
// lane_sum form scalar, with a compare and branch per class (the select was not if-converted): ~20% of the E-step.
inline double entropy_sum(const double* p, const double* sh, int64_t n, double log_s, double clip,
                          double clip_term) {
  using Lanes = double __attribute__((vector_size(kLanes * sizeof(double))));
  static_assert(sizeof(Lanes) == kLanes * sizeof(double));
  const Lanes clip_v = Lanes{} + clip, clip_term_v = Lanes{} + clip_term, log_s_v = Lanes{} + log_s;
  Lanes lanes = {};
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes) {
    Lanes pv, sv;
    std::memcpy(&pv, p + y, sizeof(Lanes));
    std::memcpy(&sv, sh + y, sizeof(Lanes));
    const Lanes term = pv * (sv - log_s_v);
    lanes += pv >= clip_v ? term : clip_term_v;
  }
  double l[kLanes];
  std::memcpy(l, &lanes, sizeof(Lanes));
  for (; y < n; ++y) l[y % kLanes] += p[y] >= clip ? p[y] * (sh[y] - log_s) : clip_term;
  double s = 0.0;
  for (int64_t u = 0; u < kLanes; ++u) s += l[u];
  return s;
}

// One pass over an exponentiated row, in registers of 8 classes: p = row[y] · inv (written back), kept = #{p >= tau},
// the class sums of the stored value TP(p) (acc += p, acc_n += n · p), and the return value
// Σ_y (p >= clip ? p · (sh[y] − log_s) : clip_term) summed as lane_sum sums. Every element sees the operations
// of the separate passes in the same order, so the results are the same bit for bit. (The same loop in scalar
// form was not vectorised by GCC and ran 10% slower than the separate passes.)
using Lanes8 = double __attribute__((vector_size(kLanes * sizeof(double))));
using Lanes8f = float __attribute__((vector_size(kLanes * sizeof(float))));
using Lanes8i = long __attribute__((vector_size(kLanes * sizeof(long))));

template <typename TP>
inline Lanes8 stored_lanes(Lanes8 p) {
  if constexpr (std::is_same_v<TP, float>) return __builtin_convertvector(__builtin_convertvector(p, Lanes8f), Lanes8);
  else return p;
}

template <typename TP>
inline double finish_row(double* row, const double* sh, int64_t n, double inv, double log_s, double tau,
                         double clip, double clip_term, double n_labels, double* acc, double* acc_n,
                         int64_t& kept) {
  const Lanes8 inv_v = Lanes8{} + inv, tau_v = Lanes8{} + tau, clip_v = Lanes8{} + clip;
  const Lanes8 clip_term_v = Lanes8{} + clip_term, log_s_v = Lanes8{} + log_s, n_v = Lanes8{} + n_labels;
  Lanes8 ent = {};
  Lanes8i count = {};
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes) {
    Lanes8 r, a, an, sv;
    std::memcpy(&r, row + y, sizeof(r));
    const Lanes8 p = r * inv_v;
    std::memcpy(row + y, &p, sizeof(p));
    count -= p >= tau_v;  // a true comparison is -1
    const Lanes8 stored = stored_lanes<TP>(p);
    std::memcpy(&a, acc + y, sizeof(a));
    std::memcpy(&an, acc_n + y, sizeof(an));
    a += stored;
    an += n_v * stored;
    std::memcpy(acc + y, &a, sizeof(a));
    std::memcpy(acc_n + y, &an, sizeof(an));
    std::memcpy(&sv, sh + y, sizeof(sv));
    const Lanes8 term = p * (sv - log_s_v);
    ent += p >= clip_v ? term : clip_term_v;
  }
  double l[kLanes];
  std::memcpy(l, &ent, sizeof(l));
  long c[kLanes];
  std::memcpy(c, &count, sizeof(c));
  int64_t total = 0;
  for (int64_t u = 0; u < kLanes; ++u) total += c[u];
  for (; y < n; ++y) {
    const double p = row[y] * inv;
    row[y] = p;
    total += p >= tau;
    const double stored = static_cast<double>(static_cast<TP>(p));
    acc[y] += stored;
    acc_n[y] += n_labels * stored;
    l[y % kLanes] += p >= clip ? p * (sh[y] - log_s) : clip_term;
  }
  kept = total;
  double sum = 0.0;
  for (int64_t u = 0; u < kLanes; ++u) sum += l[u];
  return sum;
}

// row[y] += rows[0][y] + ... in that order (left to right), 8 classes at a time in a register.
constexpr int64_t kRowBatch = 16;

inline Lanes8 load_lanes(const double* p) {
  Lanes8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline Lanes8 load_lanes(const float* p) {
  Lanes8f v;
  std::memcpy(&v, p, sizeof(v));
  return __builtin_convertvector(v, Lanes8);
}

template <typename TL>
inline void add_rows(double* row, const TL* const* rows, int64_t nb, int64_t n) {
  using D = Lanes8;
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes) {
    D acc;
    std::memcpy(&acc, row + y, sizeof(D));
    for (int64_t b = 0; b < nb; ++b) acc += load_lanes(rows[b] + y);
    std::memcpy(row + y, &acc, sizeof(D));
  }
  for (; y < n; ++y) {
    double a = row[y];
    for (int64_t b = 0; b < nb; ++b) a += static_cast<double>(rows[b][y]);
    row[y] = a;
  }
}

// lanes[y % kLanes] += x[y] * l[y]: a dot product in kLanes independent sums, which GCC vectorises (a
// single running sum would be a chain of dependent adds); the order is fixed, so results are too.
inline void lane_dot(const double* x, const double* l, int64_t n, double* lanes) {
  int64_t y = 0;
  for (; y + kLanes <= n; y += kLanes)
    for (int u = 0; u < kLanes; ++u) lanes[u] += x[y + u] * l[y + u];
  for (; y < n; ++y) lanes[y % kLanes] += x[y] * l[y];
}

}  // namespace luab::aggregate
