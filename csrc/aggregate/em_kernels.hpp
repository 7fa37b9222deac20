// The shared building blocks of every EM estimator, in log space, OpenMP-parallel (the E-steps: e_step.hpp).
//
// Layouts (row-major, double throughout: posteriors are compared with crowd-kit to 1e-6 and EM
// sums millions of log-probabilities, so fp32 would drift):
//   post      [T, K]      posterior over the true class of each task
//   log_theta [W, K, K]   log p(z | y, w) stored as [w][z][y]: the row for an observed label z is
//                         contiguous over true classes y, so the E-step adds one row per label.
//   counts    [W, K, K]   expected counts, same [w][z][y] layout.
#pragma once

#include <cstdint>
#include <vector>

#include "crowd.hpp"

namespace luab::aggregate {

// Number of threads to use: n_threads > 0 as given; otherwise OpenMP's default, except for small
// problems (work = labels × classes below ~250k), where one thread beats the cost of waking others.
// Throws std::invalid_argument for n_threads outside 0..kMaxThreads (common/parallel.hpp).
int resolve_threads(int n_threads, int64_t work);

// Prefetches the K elements of a table row that a label will read a few labels from now. Into L2 (prefetcht1),
// not L1: a row is 7 cache lines and 8 labels are in flight, more than L1's miss buffers hold, and measured
// A/B in one process (100k × 100 crowd, fp32) the E-step took ~10% less time than with prefetcht0.
template <typename T>
inline void prefetch_row(const T* row, int64_t k) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < k * static_cast<int64_t>(sizeof(T)); off += 64)
    __builtin_prefetch(p + off, 0, 2);
}

// Each label reads one random K-row of a table far larger than the caches (log_theta in the E-step,
// the posteriors in the M-step); fetching it a few labels ahead hides most of the DRAM latency.
constexpr int64_t kPrefetchAhead = 8;

// counts[w][z][y] = #{labels (i, z) of w with yhat_i == y}: the hard M-step, from the argmaxes alone.
void accumulate_hard_counts(const Crowd& c, const int32_t* yhat, double* counts, int n_threads);

// Mean of post over the tasks that have at least one label (crowd-kit's class prior update).
// Blocked in a fixed block size, so the sum order does not depend on the thread count.
// label_totals [K] or nullptr: Σ_i n_i post_i (each task weighted by its number of labels).
template <typename TP>
void mean_labelled_posterior(const Crowd& c, const TP* post, double* out, int n_threads,
                             double* label_totals = nullptr);

// Hard EM's argmax treats classes within this relative distance of the maximum as tied, and takes the lowest.
// Classes that tie in exact arithmetic (three different labels under a symmetric prior) come out of exp/log a
// few ulp apart, in an order that depends on the exp implementation (glibc, libmvec, numpy all differ); one
// flipped argmax changes every later iteration. 1e-12 is far above rounding (~1e-15) and far below any real
// difference between two posteriors.
constexpr double kArgmaxTieTolerance = 1e-12;

// argmax of each labelled task's row (ties as above): the only rows hard EM counts; 0 for tasks without labels,
// whose rows are not read.
void argmax_labelled_rows(const Crowd& c, const double* post, int32_t* out, int n_threads);

// Deterministic parallel sum over tasks of f(task): fixed blocks, block sums added in order.
template <typename F>
double blocked_task_sum(int64_t n_tasks, int n_threads, F&& f);

}  // namespace luab::aggregate

#include "em_kernels_inl.hpp"
