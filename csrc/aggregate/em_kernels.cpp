#include "em_kernels.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>


#include "../common/parallel.hpp"
#include "../common/stream_store.hpp"
#include "../common/vmath.hpp"

namespace luab::aggregate {

namespace {

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

}  // namespace

int resolve_threads(int n_threads, int64_t work) {
  if (check_threads(n_threads) > 0) return n_threads;
  return work < (int64_t{1} << 18) ? 1 : default_threads();
}

template <typename TP, typename TL>
void e_step(const Crowd& c, const double* log_class_prior, const TL* log_theta, const double* task_prior,
            double task_prior_eps, TP* post, int n_threads, double* entropy, double entropy_clip,
            const double* coin, const double* log_task_prior, bool skip_unlabelled,
            CompactPosteriors<TP>* compact, double* labelled_mean, double* label_totals) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
  const double clip_term = entropy_clip * std::log(entropy_clip);
  // class sums per fixed chunk of tasks, the chunks added in order: the same sums for any number of threads
  const bool sums = labelled_mean != nullptr || label_totals != nullptr;
  const int64_t n_chunks = (c.n_tasks + kEStepChunk - 1) / kEStepChunk;
  std::vector<double> partial(sums ? static_cast<size_t>(n_chunks * 2 * K) : 0, 0.0);
  FirstError err;  // the per-thread rows are the region's only allocation; nothing else in it throws
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
      for (int64_t i = chunk * kEStepChunk; i < chunk_end; ++i) {
        const int64_t n_i = c.task_ptr[i + 1] - c.task_ptr[i];
        if (skip_unlabelled && n_i == 0) continue;
        double* row = scratch.data();
        for (int64_t y = 0; y < K; ++y) row[y] = log_class_prior[y];
        if (log_task_prior != nullptr) {
          const double* lt = log_task_prior + i * K;
          for (int64_t y = 0; y < K; ++y) row[y] += lt[y];
        } else if (task_prior != nullptr) {
          const double* tp = task_prior + i * K;
          for (int64_t y = 0; y < K; ++y) row[y] += std::log(tp[y] + task_prior_eps);
        }
        if (coin != nullptr) {
          // one-coin: every class gets log(wrong), the given label log(right) instead
          double wrong_sum = 0.0;
          for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
            const double* cw = coin + 2 * static_cast<int64_t>(c.task_worker[j]);
            wrong_sum += cw[1];
            row[c.task_label[j]] += cw[0] - cw[1];
          }
          for (int64_t y = 0; y < K; ++y) row[y] += wrong_sum;
        }
        if (coin == nullptr && !std::is_same_v<TL, float>) {
          for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
            if (j + kPrefetchAhead < c.n_labels)
              prefetch_row(log_theta + c.task_worker[j + kPrefetchAhead] * KK +
                               static_cast<int64_t>(c.task_label[j + kPrefetchAhead]) * K, K);
            const TL* lt = log_theta + c.task_worker[j] * KK + static_cast<int64_t>(c.task_label[j]) * K;
            for (int64_t y = 0; y < K; ++y) row[y] += static_cast<double>(lt[y]);
          }
        } else if (coin == nullptr) {
          // float rows: a batch of labels at a time, each block of 8 classes summed in a register (one load and
          // one store of the row per batch instead of per label; the same additions in the same order). For
          // double rows this measured 3% slower (A/B), so they keep the loop above.
          const TL* rows[kRowBatch];
          for (int64_t jb = c.task_ptr[i]; jb < c.task_ptr[i + 1]; jb += kRowBatch) {
            const int64_t nb = std::min<int64_t>(kRowBatch, c.task_ptr[i + 1] - jb);
            for (int64_t b = 0; b < nb; ++b) {
              const int64_t j = jb + b;
              if (j + kPrefetchAhead < c.n_labels)
                prefetch_row(log_theta + c.task_worker[j + kPrefetchAhead] * KK +
                                 static_cast<int64_t>(c.task_label[j + kPrefetchAhead]) * K, K);
              rows[b] = log_theta + c.task_worker[j] * KK + static_cast<int64_t>(c.task_label[j]) * K;
            }
            add_rows(row, rows, nb, K);
          }
        }
        // shift by the row maximum before exponentiating (the log-sum-exp trick); the shifted logs stay in
        // `shifted` for the entropy, and `row` takes the probabilities
        const double m = lane_max(row, K);
        double* sh = shifted.data();
        for (int64_t y = 0; y < K; ++y) sh[y] = row[y] - m;
        vexp(sh, row, K);
        const double s = lane_sum(row, K, [](const double* r, int64_t y) { return r[y]; });
        const double inv = 1.0 / s;
        if (compact != nullptr && acc != nullptr && n_i > 0 && entropy != nullptr) {
          // soft EM's case: normalising, counting the compact entries, the class sums and the entropy in one
          // pass over the row (finish_row: the same operations in the same order as the passes below)
          int64_t kept = 0;
          entropy[i] = -finish_row<TP>(row, sh, K, inv, std::log(s), compact->tau(), entropy_clip, clip_term,
                                       static_cast<double>(n_i), acc, acc + K, kept);
          compact->set_row_counted(i, row, K, kept);
          stream_store(post + i * K, row, K);  // the M-step reads the compact rows, not this one
          continue;
        }
        for (int64_t y = 0; y < K; ++y) row[y] *= inv;
        if (compact != nullptr) compact->set_row(i, row, K);
        TP* out = post + i * K;
        // with compact rows the M-step does not read this row back: stream it past the caches
        if (compact != nullptr) stream_store(out, row, K);
        else for (int64_t y = 0; y < K; ++y) out[y] = static_cast<TP>(row[y]);
        if (acc != nullptr && n_i > 0) {
          const double n = static_cast<double>(n_i);
          for (int64_t y = 0; y < K; ++y) {
            const double p = static_cast<double>(static_cast<TP>(row[y]));
            acc[y] += p;
            acc[K + y] += n * p;
          }
        }
        if (entropy != nullptr) {
          const double log_s = std::log(s);
          entropy[i] = -entropy_sum(row, sh, K, log_s, entropy_clip, clip_term);
        }
      }
    }
    store_fence();
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
  if (labelled_mean != nullptr)
    for (int64_t y = 0; y < K; ++y) labelled_mean[y] = mean[y] / n;
  if (label_totals != nullptr) std::copy(totals.begin(), totals.end(), label_totals);
}

void accumulate_hard_counts(const Crowd& c, const int32_t* yhat, double* counts, int n_threads) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    double* cw = counts + w * KK;
    std::memset(cw, 0, sizeof(double) * KK);
    for (int64_t j = c.worker_ptr[w]; j < c.worker_ptr[w + 1]; ++j)
      cw[static_cast<int64_t>(c.worker_label[j]) * K + yhat[c.worker_task[j]]] += 1.0;
  }
}

template <typename TP>
void mean_labelled_posterior(const Crowd& c, const TP* post, double* out, int n_threads, double* label_totals) {
  const int64_t K = c.n_classes;
  const int64_t n_blocks = (c.n_tasks + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(n_blocks * 2 * K), 0.0);
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
  for (int64_t b = 0; b < n_blocks; ++b) {
    double* acc = partial.data() + b * 2 * K;
    double* wacc = acc + K;
    const int64_t hi = std::min(c.n_tasks, (b + 1) * kReduceBlock);
    for (int64_t i = b * kReduceBlock; i < hi; ++i) {
      const double n_i = static_cast<double>(c.task_ptr[i + 1] - c.task_ptr[i]);
      if (n_i == 0.0) continue;
      const TP* p = post + i * K;
      for (int64_t y = 0; y < K; ++y) {
        acc[y] += static_cast<double>(p[y]);
        wacc[y] += n_i * static_cast<double>(p[y]);
      }
    }
  }
  std::fill(out, out + K, 0.0);
  if (label_totals != nullptr) std::fill(label_totals, label_totals + K, 0.0);
  for (int64_t b = 0; b < n_blocks; ++b)
    for (int64_t y = 0; y < K; ++y) {
      out[y] += partial[b * 2 * K + y];
      if (label_totals != nullptr) label_totals[y] += partial[b * 2 * K + K + y];
    }
  const double n = static_cast<double>(std::max<int64_t>(c.n_labelled_tasks, 1));
  for (int64_t y = 0; y < K; ++y) out[y] /= n;
}

template void e_step<double, double>(const Crowd&, const double*, const double*, const double*, double, double*,
                                     int, double*, double, const double*, const double*, bool,
                                     CompactPosteriors<double>*, double*, double*);
template void e_step<float, float>(const Crowd&, const double*, const float*, const double*, double, float*, int,
                                   double*, double, const double*, const double*, bool,
                                   CompactPosteriors<float>*, double*, double*);

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
template void prior_only_rows<double>(const Crowd&, const double*, const double*, double, double*, int);
template void prior_only_rows<float>(const Crowd&, const double*, const double*, double, float*, int);
template void mean_labelled_posterior<double>(const Crowd&, const double*, double*, int, double*);
template void mean_labelled_posterior<float>(const Crowd&, const float*, double*, int, double*);

void argmax_labelled_rows(const Crowd& c, const double* post, int32_t* out, int n_threads) {
  const int64_t k = c.n_classes;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1024)
  for (int64_t i = 0; i < c.n_tasks; ++i) {
    if (c.task_ptr[i] == c.task_ptr[i + 1]) {
      out[i] = 0;
      continue;
    }
    const double* p = post + i * k;
    double m = p[0];
    for (int64_t y = 1; y < k; ++y) m = std::max(m, p[y]);
    const double tied = m * (1.0 - kArgmaxTieTolerance);
    int64_t best = 0;
    while (p[best] < tied) ++best;  // the lowest class within the tolerance of the maximum
    out[i] = static_cast<int32_t>(best);
  }
}

}  // namespace luab::aggregate
