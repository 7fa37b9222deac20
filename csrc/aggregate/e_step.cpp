// The E-steps (e_step.hpp): one driver that walks the tasks in fixed chunks, and per mode the row it computes,
// built from the shared row helpers below and in row_lanes.hpp.
#include "e_step.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../common/parallel.hpp"
#include "../common/stream_store.hpp"
#include "../common/vmath.hpp"
#include "em_kernels.hpp"
#include "row_lanes.hpp"

namespace luab::aggregate {
namespace {

// The E-step's unit of work (one OpenMP chunk) and of its class sums (one partial sum per chunk).
constexpr int64_t kEStepChunk = 256;

// Calls row_fn(i, n_i, row, shifted, acc) for every task i (n_i labels), in chunks of kEStepChunk tasks (one
// OpenMP chunk each), with two K-element scratch rows per thread. With `out`, acc points to the chunk's class
// sums ([0, K): Σ p, [K, 2K): Σ n_i p), which are then added in chunk order: the same sums for any number of
// threads. row_fn must not throw (it runs inside the region); the scratch rows are the region's only allocation.
template <typename RowFn>
void for_each_task(const Crowd& c, int n_threads, const SoftEStepOut* out, RowFn&& row_fn) {
  const int64_t K = c.n_classes;
  const bool sums = out != nullptr;
  const int64_t n_chunks = (c.n_tasks + kEStepChunk - 1) / kEStepChunk;
  std::vector<double> partial(sums ? static_cast<size_t>(n_chunks * 2 * K) : 0, 0.0);
  FirstError err;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> shifted, scratch;
    const bool ready = err.run([&] {
      shifted.resize(K);
      scratch.resize(K);
    });
#pragma omp for schedule(dynamic, 1)
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
      if (!ready) continue;
      double* acc = sums ? partial.data() + chunk * 2 * K : nullptr;
      const int64_t chunk_end = std::min(c.n_tasks, (chunk + 1) * kEStepChunk);
      for (int64_t i = chunk * kEStepChunk; i < chunk_end; ++i)
        row_fn(i, c.task_ptr[i + 1] - c.task_ptr[i], scratch.data(), shifted.data(), acc);
    }
    store_fence();  // the rows may have been written with streaming stores
  }
  err.rethrow();
  if (!sums) return;
  std::vector<double> mean(K, 0.0), totals(K, 0.0);
  for (int64_t b = 0; b < n_chunks; ++b)
    for (int64_t y = 0; y < K; ++y) {
      mean[y] += partial[b * 2 * K + y];
      totals[y] += partial[b * 2 * K + K + y];
    }
  const double n = static_cast<double>(std::max<int64_t>(c.n_labelled_tasks, 1));
  for (int64_t y = 0; y < K; ++y) out->labelled_mean[y] = mean[y] / n;
  std::copy(totals.begin(), totals.end(), out->label_totals);
}

// row = log_class_prior [+ log(task_prior_i + eps)]
inline void start_row(double* row, const double* log_class_prior, const double* task_prior, double eps, int64_t i,
                      int64_t K) {
  for (int64_t y = 0; y < K; ++y) row[y] = log_class_prior[y];
  if (task_prior == nullptr) return;
  const double* tp = task_prior + i * K;
  for (int64_t y = 0; y < K; ++y) row[y] += std::log(tp[y] + eps);
}

// row += Σ over task i's labels (w, z) of log_theta[w][z][·], prefetching the rows kPrefetchAhead labels ahead.
template <typename TL>
inline void add_confusion_rows(const Crowd& c, int64_t i, const TL* log_theta, double* row) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
  auto label_row = [&](int64_t j) {
    return log_theta + c.task_worker[j] * KK + static_cast<int64_t>(c.task_label[j]) * K;
  };
  if constexpr (!std::is_same_v<TL, float>) {
    for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
      if (j + kPrefetchAhead < c.n_labels) prefetch_row(label_row(j + kPrefetchAhead), K);
      const TL* lt = label_row(j);
      for (int64_t y = 0; y < K; ++y) row[y] += static_cast<double>(lt[y]);
    }
  } else {
    // float rows: a batch of labels at a time, each block of 8 classes summed in a register (one load and one
    // store of the row per batch instead of per label; the same additions in the same order). For double rows
    // this measured 3% slower (A/B), so they keep the loop above.
    const TL* rows[kRowBatch];
    for (int64_t jb = c.task_ptr[i]; jb < c.task_ptr[i + 1]; jb += kRowBatch) {
      const int64_t nb = std::min<int64_t>(kRowBatch, c.task_ptr[i + 1] - jb);
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t j = jb + b;
        if (j + kPrefetchAhead < c.n_labels) prefetch_row(label_row(j + kPrefetchAhead), K);
        rows[b] = label_row(j);
      }
      add_rows(row, rows, nb, K);
    }
  }
}

// One-coin labels: every class gets log(wrong), the given label log(right) instead.
inline void add_coin_labels(const Crowd& c, int64_t i, const double* coin, double* row) {
  double wrong_sum = 0.0;
  for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
    const double* cw = coin + 2 * static_cast<int64_t>(c.task_worker[j]);
    wrong_sum += cw[1];
    row[c.task_label[j]] += cw[0] - cw[1];
  }
  for (int64_t y = 0; y < c.n_classes; ++y) row[y] += wrong_sum;
}

// Shifts the log row by its maximum (the log-sum-exp trick) into sh and exponentiates it into row; returns the
// sum of row. The shifted logs stay in sh for the entropy.
inline double exp_shifted(double* row, double* sh, int64_t K) {
  const double m = lane_max(row, K);
  for (int64_t y = 0; y < K; ++y) sh[y] = row[y] - m;
  vexp(sh, row, K);
  return lane_sum(row, K, [](const double* r, int64_t y) { return r[y]; });
}

inline void scale_row(double* row, int64_t K, double inv) {
  for (int64_t y = 0; y < K; ++y) row[y] *= inv;
}

// Normalises the exponentiated row (sum s) and stores it as TP, with its class sums (acc += p, acc + K += n_i · p)
// and entropy: a soft E-step that writes through the caches.
template <typename TP>
inline void store_soft_row(double* row, const double* sh, int64_t i, int64_t n_i, double s, TP* post, double* acc,
                           const SoftEStepOut& out, double clip_term, int64_t K) {
  scale_row(row, K, 1.0 / s);
  TP* dst = post + i * K;
  for (int64_t y = 0; y < K; ++y) dst[y] = static_cast<TP>(row[y]);
  if (n_i > 0) {
    const double n = static_cast<double>(n_i);
    for (int64_t y = 0; y < K; ++y) {
      const double p = static_cast<double>(static_cast<TP>(row[y]));
      acc[y] += p;
      acc[K + y] += n * p;
    }
  }
  out.entropy[i] = -entropy_sum(row, sh, K, std::log(s), out.entropy_clip, clip_term);
}

// A gold task's row: one-hot at class g, as if exponentiated (sum 1, shifted logs 0), so that finishing it gives
// crowd-kit's entropy of a corrected row: 0 for the class, the clip term for each of the others.
inline void one_hot_row(double* row, double* sh, int64_t g, int64_t K) {
  for (int64_t y = 0; y < K; ++y) {
    row[y] = y == g ? 1.0 : 0.0;
    sh[y] = 0.0;
  }
}

// The row of a soft E-step: the priors, the labels' log-likelihoods (add_labels(i, row)), exponentiated (or the
// one-hot row of a gold task: gold [T] or nullptr); then finish(i, n_i, row, shifted, s, acc) normalises (s: the
// row's sum), stores and sums it.
template <typename AddLabels, typename Finish>
void soft_rows(const Crowd& c, const double* log_class_prior, const double* task_prior, double task_prior_eps,
               const int64_t* gold, const SoftEStepOut& out, int n_threads, AddLabels&& add_labels, Finish&& finish) {
  const int64_t K = c.n_classes;
  for_each_task(c, n_threads, &out, [&](int64_t i, int64_t n_i, double* row, double* sh, double* acc) {
    if (gold != nullptr && gold[i] >= 0) {
      one_hot_row(row, sh, gold[i], K);
      finish(i, n_i, row, sh, 1.0, acc);
      return;
    }
    start_row(row, log_class_prior, task_prior, task_prior_eps, i, K);
    add_labels(i, row);
    const double s = exp_shifted(row, sh, K);
    finish(i, n_i, row, sh, s, acc);
  });
}

}  // namespace

template <typename TP>
void e_step_confusion(const Crowd& c, const double* log_class_prior, const TP* log_theta, const double* task_prior,
                      double task_prior_eps, const int64_t* gold, TP* post, CompactPosteriors<TP>& compact,
                      const SoftEStepOut& out, int n_threads) {
  const int64_t K = c.n_classes;
  const double clip_term = out.entropy_clip * std::log(out.entropy_clip);
  soft_rows(
      c, log_class_prior, task_prior, task_prior_eps, gold, out, n_threads,
      [&](int64_t i, double* row) { add_confusion_rows(c, i, log_theta, row); },
      [&](int64_t i, int64_t n_i, double* row, const double* sh, double s, double* acc) {
        const double inv = 1.0 / s;
        if (n_i > 0) {
          // normalising, counting the compact entries, the class sums and the entropy in one pass over the row
          // (finish_row: the same operations in the same order as the separate passes below)
          int64_t kept = 0;
          out.entropy[i] = -finish_row<TP>(row, sh, K, inv, std::log(s), compact.tau(), out.entropy_clip,
                                           clip_term, static_cast<double>(n_i), acc, acc + K, kept);
          compact.set_row_counted(i, row, K, kept);
        } else {
          scale_row(row, K, inv);
          compact.set_row(i, row, K);
          out.entropy[i] = -entropy_sum(row, sh, K, std::log(s), out.entropy_clip, clip_term);
        }
        stream_store(post + i * K, row, K);  // the M-step reads the compact rows, not this one
      });
}

template <typename TP>
void e_step_one_coin(const Crowd& c, const double* log_class_prior, const double* coin, const double* task_prior,
                     double task_prior_eps, TP* post, const SoftEStepOut& out, int n_threads) {
  const double clip_term = out.entropy_clip * std::log(out.entropy_clip);
  soft_rows(
      c, log_class_prior, task_prior, task_prior_eps, nullptr, out, n_threads,
      [&](int64_t i, double* row) { add_coin_labels(c, i, coin, row); },
      [&](int64_t i, int64_t n_i, double* row, const double* sh, double s, double* acc) {
        store_soft_row(row, sh, i, n_i, s, post, acc, out, clip_term, c.n_classes);
      });
}

void e_step_labelled(const Crowd& c, const double* log_class_prior, const double* log_theta,
                     const double* log_task_prior, double* post, int n_threads) {
  const int64_t K = c.n_classes;
  for_each_task(c, n_threads, nullptr, [&](int64_t i, int64_t n_i, double* row, double* sh, double*) {
    if (n_i == 0) return;
    for (int64_t y = 0; y < K; ++y) row[y] = log_class_prior[y];
    if (log_task_prior != nullptr)
      for (int64_t y = 0; y < K; ++y) row[y] += log_task_prior[i * K + y];
    add_confusion_rows(c, i, log_theta, row);
    const double s = exp_shifted(row, sh, K);
    scale_row(row, K, 1.0 / s);
    std::copy(row, row + K, post + i * K);
  });
}

template <typename TP>
void prior_only_rows(const Crowd& c, const double* class_prior, const double* task_prior, double task_prior_eps,
                     TP* post, int n_threads) {
  const int64_t K = c.n_classes;
  FirstError err;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> row;
    const bool ready = err.run([&] { row.resize(K); });
#pragma omp for schedule(dynamic, 1024)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (!ready || c.task_ptr[i] != c.task_ptr[i + 1]) continue;
      double s = 0.0;
      for (int64_t y = 0; y < K; ++y) {
        row[y] = class_prior[y] * (task_prior != nullptr ? task_prior[i * K + y] + task_prior_eps : 1.0);
        s += row[y];
      }
      const double inv = 1.0 / s;
      for (int64_t y = 0; y < K; ++y) post[i * K + y] = static_cast<TP>(row[y] * inv);
    }
  }
  err.rethrow();
}

template void e_step_confusion<double>(const Crowd&, const double*, const double*, const double*, double,
                                       const int64_t*, double*, CompactPosteriors<double>&, const SoftEStepOut&, int);
template void e_step_confusion<float>(const Crowd&, const double*, const float*, const double*, double,
                                      const int64_t*, float*, CompactPosteriors<float>&, const SoftEStepOut&, int);
template void e_step_one_coin<double>(const Crowd&, const double*, const double*, const double*, double, double*,
                                      const SoftEStepOut&, int);
template void e_step_one_coin<float>(const Crowd&, const double*, const double*, const double*, double, float*,
                                     const SoftEStepOut&, int);
template void prior_only_rows<double>(const Crowd&, const double*, const double*, double, double*, int);
template void prior_only_rows<float>(const Crowd&, const double*, const double*, double, float*, int);

}  // namespace luab::aggregate
