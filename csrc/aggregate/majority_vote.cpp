#include "majority_vote.hpp"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <vector>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "em_kernels.hpp"

namespace luab::aggregate {

template <typename TP>
void majority_vote_into(const Crowd& c, const double* weights, int n_threads, TP* out,
                        CompactPosteriors<TP>* compact) {
  const int64_t K = c.n_classes;
  FirstError err;  // the per-thread row is the region's only allocation (an exception cannot leave the region)
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> row;
    const bool ready = err.run([&] { row.resize(K); });
    // each thread writes (and so first-touches) its own rows: no serial zero-fill of the whole table
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (!ready) continue;
      double total = 0.0;
      for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
        const double v = weights != nullptr ? weights[c.task_worker[j]] : 1.0;
        row[c.task_label[j]] += v;
        total += v;
      }
      TP* dst = out + i * K;
      if (total != 0.0 && compact != nullptr) {  // the same shares as the row written: the M-step's sums agree
        for (int64_t y = 0; y < K; ++y) dst[y] = static_cast<TP>(row[y] / total);
        for (int64_t y = 0; y < K; ++y) row[y] /= total;
        compact->set_row(i, row.data(), K);
        std::fill(row.begin(), row.end(), 0.0);
      } else if (total != 0.0) {
        // only the voted classes divide (0 / total is the +0.0 the fill writes): a task holds a few of K classes,
        // and dividing all K was three quarters of a 500k-label, 100-class vote
        std::fill(dst, dst + K, TP(0));
        for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
          const int32_t z = c.task_label[j];
          dst[z] = static_cast<TP>(row[z] / total);
        }
        for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) row[c.task_label[j]] = 0.0;
      } else {
        for (int64_t y = 0; y < K; ++y) dst[y] = static_cast<TP>(1.0 / static_cast<double>(K));
        for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) row[c.task_label[j]] = 0.0;
      }
    }
  }
  err.rethrow();
}

template void majority_vote_into<double>(const Crowd&, const double*, int, double*, CompactPosteriors<double>*);
template void majority_vote_into<float>(const Crowd&, const double*, int, float*, CompactPosteriors<float>*);

namespace {

// Adds task i's votes to score [K] as pandas' groupby sum adds a group (Kahan: y = v - comp, t = sum + y,
// comp = (t - sum) - y, reset to 0 when NaN, sum = t); crowd-kit 1.4.2, majority_vote.py, sums the skills so.
inline void kahan_votes(const Crowd& c, int64_t i, const double* weights, double* score, double* comp) {
  for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
    const int32_t z = c.task_label[j];
    const double v = weights != nullptr ? weights[c.task_worker[j]] : 1.0;
    const double y = v - comp[z];
    const double t = score[z] + y;
    comp[z] = t - score[z] - y;
    if (std::isnan(comp[z])) comp[z] = 0.0;  // an infinite vote: pandas keeps the sum infinite, not NaN
    score[z] = t;
  }
}

// numpy's pairwise sum of a contiguous float64 row (numpy's pairwise_sum for add.reduce), which crowd-kit's
// normalize_rows gets from DataFrame.sum(axis=1): under 8 elements in order from 0; up to 128 in eight interleaved
// sums joined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the tail in order; beyond 128 the two
// halves, split at a multiple of 8, each summed so.
double numpy_pairwise_sum(const double* a, int64_t n) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - n % 8; i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return numpy_pairwise_sum(a, half) + numpy_pairwise_sum(a + half, n - half);
}

// numpy_pairwise_sum of a row of n non-negative values that are zero but at the increasing positions pos[0..m)
// (relative to offset): zeros change none of its partial sums, so skipping them gives the same bits.
double sparse_pairwise_sum(const int64_t* pos, const double* val, int64_t m, int64_t n, int64_t offset) {
  if (n < 8) {
    double res = 0.0;
    for (int64_t k = 0; k < m; ++k) res += val[k];
    return res;
  }
  if (n <= 128) {
    double r[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    const int64_t lanes_end = n - n % 8;
    int64_t k = 0;
    for (; k < m && pos[k] - offset < lanes_end; ++k) r[(pos[k] - offset) % 8] += val[k];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; k < m; ++k) res += val[k];
    return res;
  }
  int64_t half = n / 2;
  half -= half % 8;
  const int64_t split = std::lower_bound(pos, pos + m, offset + half) - pos;
  return sparse_pairwise_sum(pos, val, split, half, offset) +
         sparse_pairwise_sum(pos + split, val + split, m - split, n - half, offset + half);
}

// One thread's scratch for the vote: K-element score and compensation rows (zero between tasks), and the classes a
// task's votes touched.
struct VoteScratch {
  std::vector<double> score, comp, share, val;
  std::vector<int64_t> touched;
  std::vector<uint8_t> mark;

  void allocate(int64_t K) {
    score.assign(K, 0.0);
    comp.assign(K, 0.0);
    share.resize(K);
    val.resize(K);
    touched.resize(K);
    mark.assign(K, 0);
  }
};

// Task i's label without its K shares, for votes of non-negative weight (weights nullptr: counts, whose total is the
// number of votes exactly; otherwise the classes in index order): the largest share is a voted class's, unless the
// total is 0 and every share NaN (-1). Ties go to the class first in column order (rank[y]: its position).
int64_t sparse_task_label(const Crowd& c, int64_t i, const double* weights, const int64_t* rank, VoteScratch& s) {
  int64_t m = 0;
  for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
    const int32_t z = c.task_label[j];
    if (!s.mark[z]) {
      s.mark[z] = 1;
      s.touched[m++] = z;
    }
  }
  kahan_votes(c, i, weights, s.score.data(), s.comp.data());
  double total = static_cast<double>(c.task_ptr[i + 1] - c.task_ptr[i]);
  if (weights != nullptr) {
    std::sort(s.touched.begin(), s.touched.begin() + m);
    for (int64_t k = 0; k < m; ++k) s.val[k] = s.score[s.touched[k]];
    total = sparse_pairwise_sum(s.touched.data(), s.val.data(), m, c.n_classes, 0);
  }
  int64_t best = -1;
  double top = 0.0;
  for (int64_t k = 0; k < m; ++k) {
    const int64_t y = s.touched[k];
    const double share = s.score[y] / total;
    const int64_t ry = rank != nullptr ? rank[y] : y;
    if (best < 0 || share > top || (share == top && ry < (rank != nullptr ? rank[best] : best))) {
      best = y;
      top = share;
    }
  }
  for (int64_t k = 0; k < m; ++k) {
    s.score[s.touched[k]] = 0.0;
    s.comp[s.touched[k]] = 0.0;
    s.mark[s.touched[k]] = 0;
  }
  return total > 0.0 ? best : -1;
}

// pandas' idxmax over a row (nanargmax): NaN counts as -inf, the first maximum in column order wins; -1 when the
// whole row is NaN.
inline int64_t first_max(const double* share, const int64_t* order, int64_t K) {
  int64_t best = -1;
  double top = 0.0;
  bool any = false;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t y = order != nullptr ? order[k] : k;
    const bool nan = std::isnan(share[y]);
    const double v = nan ? -HUGE_VAL : share[y];
    any |= !nan;
    if (best < 0 || v > top) {
      best = y;
      top = v;
    }
  }
  return any ? best : -1;
}

}  // namespace

int64_t crowdkit_vote(const Crowd& c, const double* weights, const int64_t* order, int n_threads, double* post,
                      int64_t* labels) {
  const int64_t K = c.n_classes;
  // labels alone, from the voted classes only (a few per task, not K), where that gives the same bits: weights
  // finite and >= 0 (no NaN or -0.0 shares among the others), and counts when a column order is given
  bool sparse = post == nullptr && (weights == nullptr || order == nullptr);
  for (int64_t w = 0; sparse && weights != nullptr && w < c.n_workers; ++w)
    sparse = std::isfinite(weights[w]) && !std::signbit(weights[w]);
  std::vector<int64_t> rank;
  if (order != nullptr) {
    rank.resize(K);
    for (int64_t k = 0; k < K; ++k) rank[order[k]] = k;
  }
  int64_t undefined = 0;  // a whole number: the sum is the same in any order, so for any thread count
  FirstError err;
#pragma omp parallel num_threads(n_threads) reduction(+ : undefined)
  {
    VoteScratch s;
    const bool ready = err.run([&] { s.allocate(K); });
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (!ready) continue;
      if (sparse) {
        labels[i] = sparse_task_label(c, i, weights, order != nullptr ? rank.data() : nullptr, s);
        undefined += labels[i] < 0;
        continue;
      }
      kahan_votes(c, i, weights, s.score.data(), s.comp.data());
      // the row's total over every class in column order, zeros included, as DataFrame.sum(axis=1) adds it
      double total;
      if (order == nullptr) {
        total = numpy_pairwise_sum(s.score.data(), K);
      } else {
        for (int64_t k = 0; k < K; ++k) s.share[k] = s.score[order[k]];
        total = numpy_pairwise_sum(s.share.data(), K);
      }
      double* dst = post != nullptr ? post + i * K : s.share.data();
      for (int64_t y = 0; y < K; ++y) dst[y] = s.score[y] / total;
      labels[i] = first_max(dst, order, K);
      undefined += labels[i] < 0;
      for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {  // only the voted classes hold anything
        s.score[c.task_label[j]] = 0.0;
        s.comp[c.task_label[j]] = 0.0;
      }
    }
  }
  err.rethrow();
  return undefined;
}

namespace {

constexpr int64_t kScanRepeats = 32;  // a task's labels up to this many: repeats found by a scan, beyond by a sort

// first[j] for task i's labels: 0 where the answer repeats an earlier one of the task by the same worker with the
// same label. `pairs` is thread scratch for a long task's (worker, label, position), sorted.
void mark_task_repeats(const Crowd& c, int64_t i, uint8_t* first, std::vector<std::array<int64_t, 3>>& pairs) {
  const int64_t lo = c.task_ptr[i], hi = c.task_ptr[i + 1];
  if (hi - lo <= kScanRepeats) {
    for (int64_t j = lo + 1; j < hi; ++j)
      for (int64_t k = lo; k < j; ++k)
        if (c.task_worker[k] == c.task_worker[j] && c.task_label[k] == c.task_label[j]) {
          first[j] = 0;
          break;
        }
    return;
  }
  pairs.resize(static_cast<size_t>(hi - lo));
  for (int64_t j = lo; j < hi; ++j) pairs[j - lo] = {c.task_worker[j], c.task_label[j], j};
  std::sort(pairs.begin(), pairs.end());
  for (size_t k = 1; k < pairs.size(); ++k)
    if (pairs[k][0] == pairs[k - 1][0] && pairs[k][1] == pairs[k - 1][1]) first[pairs[k][2]] = 0;
}

}  // namespace

std::vector<uint8_t> first_answers(const Crowd& c, int n_threads) {
  std::vector<uint8_t> first(static_cast<size_t>(c.n_labels), 1);
  FirstError err;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<std::array<int64_t, 3>> pairs;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (err.failed()) continue;
      err.run([&] { mark_task_repeats(c, i, first.data(), pairs); });
    }
  }
  err.rethrow();
  return first;
}

void worker_accuracy(const Crowd& c, const int64_t* reference, const uint8_t* first, double* hits, double* counted,
                     int n_threads) {
  const int64_t W = c.n_workers;
  // per-thread counts: a task's workers are anyone, so threads split the tasks and each keeps its own [W]
  std::vector<int64_t> h(static_cast<size_t>(n_threads) * W, 0), n(static_cast<size_t>(n_threads) * W, 0);
#pragma omp parallel num_threads(n_threads)
  {
    int64_t* hh = h.data() + static_cast<int64_t>(omp_get_thread_num()) * W;
    int64_t* nn = n.data() + static_cast<int64_t>(omp_get_thread_num()) * W;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      const int64_t ref = reference[i];
      if (ref < 0) continue;
      for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
        if (first != nullptr && first[j] == 0) continue;
        ++nn[c.task_worker[j]];
        hh[c.task_worker[j]] += ref == c.task_label[j];
      }
    }
  }
  // whole numbers: the same totals in any order, so for any thread count
  for (int64_t w = 0; w < W; ++w) {
    int64_t hw = 0, nw = 0;
    for (int t = 0; t < n_threads; ++t) {
      hw += h[static_cast<size_t>(t) * W + w];
      nw += n[static_cast<size_t>(t) * W + w];
    }
    hits[w] = static_cast<double>(hw);
    counted[w] = static_cast<double>(nw);
  }
}

SkillVote skill_weighted_vote(const Crowd& c, const int64_t* reference, const int64_t* order, int n_threads) {
  SkillVote r;
  r.hits.resize(c.n_workers);
  r.counted.resize(c.n_workers);
  std::vector<int64_t> plain;
  if (reference == nullptr) {  // Wawa: the plain vote's labels are the reference
    plain.resize(c.n_tasks);
    crowdkit_vote(c, nullptr, order, n_threads, nullptr, plain.data());
    reference = plain.data();
  }
  const std::vector<uint8_t> first = first_answers(c, n_threads);
  worker_accuracy(c, reference, first.data(), r.hits.data(), r.counted.data(), n_threads);
  std::vector<double> skills(c.n_workers);
  for (int64_t w = 0; w < c.n_workers; ++w) {
    if (r.counted[w] == 0.0) return r;  // a worker without a skill: no weighted vote
    skills[w] = r.hits[w] / r.counted[w];
  }
  r.labels.resize(c.n_tasks);
  r.undefined = crowdkit_vote(c, skills.data(), nullptr, n_threads, nullptr, r.labels.data());
  return r;
}

Buffer<double> majority_vote(const Crowd& c, const double* weights, int n_threads) {
  const int nt = resolve_threads(n_threads, c.n_labels * c.n_classes);
  checked_size("n_tasks * n_classes", {c.n_tasks, c.n_classes});
  Buffer<double> post(c.n_tasks * c.n_classes, Uninitialized{});
  majority_vote_into(c, weights, nt, post.data());
  return post;
}

}  // namespace luab::aggregate
