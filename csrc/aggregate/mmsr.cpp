// M-MSR (mmsr.hpp): the sparse covariation matrix, numpy's row sums of its dense form, the trimmed-mean
// iteration, and the skill-weighted vote. Every loop runs one worker (or one task) per iteration with its sums in
// a fixed order, so results do not depend on the thread count.
#include "mmsr.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include <omp.h>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "em_kernels.hpp"
#include "pandas_sums.hpp"
#include "row_lanes.hpp"

namespace luab::aggregate {
namespace {

// Each task's distinct workers with their last label (by task), and the same labels by worker.
struct DistinctLabels {
  std::vector<int64_t> task_ptr;
  std::vector<int32_t> task_worker, task_label;
  std::vector<int64_t> worker_ptr, worker_task;
  std::vector<int32_t> worker_label;
};

DistinctLabels distinct_labels(const Crowd& c) {
  DistinctLabels d;
  d.task_ptr.assign(c.n_tasks + 1, 0);
  d.task_worker.reserve(c.n_labels);
  d.task_label.reserve(c.n_labels);
  std::vector<int64_t> kept_for(c.n_workers, -1);  // kept_for[w] == i: w's label on task i is already kept
  for (int64_t i = 0; i < c.n_tasks; ++i) {
    for (int64_t j = c.task_ptr[i + 1] - 1; j >= c.task_ptr[i]; --j) {  // from the last: the label that counts
      const int32_t w = c.task_worker[j];
      if (kept_for[w] == i) continue;
      kept_for[w] = i;
      d.task_worker.push_back(w);
      d.task_label.push_back(c.task_label[j]);
    }
    d.task_ptr[i + 1] = static_cast<int64_t>(d.task_worker.size());
  }
  const int64_t n = d.task_ptr[c.n_tasks];
  d.worker_ptr.assign(c.n_workers + 1, 0);
  for (int64_t k = 0; k < n; ++k) ++d.worker_ptr[d.task_worker[k] + 1];
  for (int64_t w = 0; w < c.n_workers; ++w) d.worker_ptr[w + 1] += d.worker_ptr[w];
  d.worker_task.resize(n);
  d.worker_label.resize(n);
  std::vector<int64_t> next(d.worker_ptr.begin(), d.worker_ptr.end() - 1);
  for (int64_t i = 0; i < c.n_tasks; ++i)
    for (int64_t k = d.task_ptr[i]; k < d.task_ptr[i + 1]; ++k) {
      const int64_t q = next[d.task_worker[k]]++;
      d.worker_task[q] = i;
      d.worker_label[q] = d.task_label[k];
    }
  return d;
}

// numpy's x.sum() / x.mean() of a contiguous run: the reduction starts from the identity 0.0.
double numpy_sum(const double* a, int64_t n) { return 0.0 + numpy_pairwise_sum(a, n); }

// A Python slice bound (y[s:] or y[:s]) resolved against a length n.
int64_t slice_bound(int64_t s, int64_t n) { return s < 0 ? std::max<int64_t>(n + s, 0) : std::min(s, n); }

// np.sort's order: ascending, NaN last.
bool sorted_before(double p, double q) { return p < q || (q != q && p == p); }

// crowd-kit's _remove_largest_and_smallest_F_value followed by .mean(), on x[0..m) (reordered in place): in np.sort
// order, below the current value a drop the F smallest values, or every value below a when fewer than F are; then
// likewise above a with the F largest. F may be −1 (a worker with at most one partner), which Python's slicing
// turns into "keep only the largest". A lone 0 left becomes lone_zero. Returns false when nothing is left (the
// caller keeps a). The kept values are a run of sorted positions found from three counts, so only that run is
// selected (nth_element) and sorted, for numpy's pairwise sum in sorted order: with many partners F is large
// and the run short.
bool trimmed_mean(double* x, int64_t m, int64_t F, double a, double lone_zero, double* mean) {
  int64_t numbers = 0, below = 0, at_most = 0;  // #(not NaN), #(< a), #(<= a): sorted positions of the three parts
  for (int64_t k = 0; k < m; ++k) {
    numbers += x[k] == x[k];
    below += x[k] < a;
    at_most += x[k] <= a;
  }
  const bool a_nan = a != a;  // then nothing is < a, <= a, > a or >= a
  int64_t lo = 0, hi = m;
  if (below < F) {
    lo = a_nan ? 0 : below;  // keep y >= a (never NaN)
    hi = a_nan ? 0 : numbers;
  } else {
    lo = slice_bound(F, m);  // y[F:]
  }
  const int64_t len = hi - lo;
  const int64_t numbers_end = std::min(hi, numbers);
  const int64_t above = a_nan ? 0 : std::max<int64_t>(0, numbers_end - std::max(lo, at_most));
  if (above < F) {
    hi = a_nan ? lo : std::max(lo, std::min(at_most, numbers_end));  // keep y <= a (never NaN)
  } else {
    hi = lo + slice_bound(len - F, len);  // y[:len - F]
  }
  const int64_t n = hi - lo;
  if (n == 0) return false;
  if (lo > 0) std::nth_element(x, x + lo, x + m, sorted_before);
  if (hi < m) std::nth_element(x + lo, x + hi, x + m, sorted_before);
  std::sort(x + lo, x + hi, sorted_before);
  *mean = n == 1 && x[lo] == 0.0 ? lone_zero : numpy_sum(x + lo, n) / static_cast<double>(n);
  return true;
}

// One half of an M-MSR iteration: target[j] ← trimmed mean over j's partners i of |C_ij| / given[i].
// scratch: max_degree doubles per thread, allocated once per fit.
void update_factor(const WorkerPairs& p, const double* given, double* target, int64_t F, double lone_zero,
                   int64_t max_degree, double* scratch, int n_threads) {
#pragma omp parallel num_threads(n_threads)
  {
    double* x = scratch + omp_get_thread_num() * max_degree;
#pragma omp for schedule(dynamic, 8)
    for (int64_t j = 0; j < p.n_workers; ++j) {
      const int64_t begin = p.ptr[j], m = p.ptr[j + 1] - begin;
      for (int64_t k = 0; k < m; ++k) x[k] = std::fabs(p.cov[begin + k]) / given[p.partner[begin + k]];
      double mean;
      if (trimmed_mean(x, m, F, target[j], lone_zero, &mean)) target[j] = mean;
    }
  }
}

// ‖u vᵀ − u_prev v_prevᵀ‖_F over the whole W × W matrix: one row per loop iteration, rows added in order.
double factor_change(const std::vector<double>& u, const std::vector<double>& v, const std::vector<double>& u_prev,
                     const std::vector<double>& v_prev, std::vector<double>& row_sq, int n_threads) {
  const int64_t W = static_cast<int64_t>(u.size());
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t i = 0; i < W; ++i) {
    const double ui = u[i], pi = u_prev[i];
    row_sq[i] = lane_sum(v.data(), W, [&](const double* vv, int64_t j) {
      const double d = ui * vv[j] - pi * v_prev[j];
      return d * d;
    });
  }
  double total = 0.0;
  for (int64_t i = 0; i < W; ++i) total += row_sq[i];
  return std::sqrt(total);
}

}  // namespace

WorkerPairs build_worker_pairs(const Crowd& c, int n_threads) {
  LUAB_CHECK(c.n_classes >= 2, "M-MSR needs at least 2 distinct labels, got n_classes=", c.n_classes);
  const int64_t W = c.n_workers;
  const DistinctLabels d = distinct_labels(c);
  const int nt = resolve_threads(n_threads, d.task_ptr[c.n_tasks] * c.n_classes);
  WorkerPairs p;
  p.n_workers = W;
  p.ptr.assign(W + 1, 0);

  // pass 1: how many partners each worker has (its row length)
  FirstError err;
#pragma omp parallel num_threads(nt)
  {
    std::vector<int64_t> seen_by;
    const bool ready = err.run([&] { seen_by.assign(W, -1); });
#pragma omp for schedule(dynamic, 16)
    for (int64_t w = 0; w < W; ++w) {
      if (!ready) continue;
      int64_t n = 0;
      for (int64_t q = d.worker_ptr[w]; q < d.worker_ptr[w + 1]; ++q) {
        const int64_t t = d.worker_task[q];
        for (int64_t k = d.task_ptr[t]; k < d.task_ptr[t + 1]; ++k) {
          const int32_t other = d.task_worker[k];
          if (other == w || seen_by[other] == w) continue;
          seen_by[other] = w;
          ++n;
        }
      }
      p.ptr[w + 1] = n;
    }
  }
  err.rethrow();
  p.min_partners = W > 0 ? *std::min_element(p.ptr.begin() + 1, p.ptr.end()) : 0;
  for (int64_t w = 0; w < W; ++w) p.ptr[w + 1] += p.ptr[w];
  p.partner.resize(p.ptr[W]);
  p.common.resize(p.ptr[W]);
  p.cov.resize(p.ptr[W]);

  // crowd-kit: C = agreement · K/(K−1) − 1/(K−1), each operation rounded as numpy rounds it
  const double scale = static_cast<double>(c.n_classes) / static_cast<double>(c.n_classes - 1);
  const double shift = 1.0 / static_cast<double>(c.n_classes - 1);
  p.unobserved_cov = 0.0 * scale - shift;

  // pass 2: common tasks and agreements per partner, partners in ascending order
#pragma omp parallel num_threads(nt)
  {
    std::vector<int64_t> common, agree;
    std::vector<int32_t> touched;
    const bool ready = err.run([&] {
      common.assign(W, 0);
      agree.assign(W, 0);
      touched.reserve(W);  // a row has fewer than W partners: push_back below never reallocates
    });
#pragma omp for schedule(dynamic, 16)
    for (int64_t w = 0; w < W; ++w) {
      if (!ready) continue;
      touched.clear();
      for (int64_t q = d.worker_ptr[w]; q < d.worker_ptr[w + 1]; ++q) {
        const int64_t t = d.worker_task[q];
        const int32_t label = d.worker_label[q];
        for (int64_t k = d.task_ptr[t]; k < d.task_ptr[t + 1]; ++k) {
          const int32_t other = d.task_worker[k];
          if (other == w) continue;
          if (common[other]++ == 0) touched.push_back(other);
          agree[other] += d.task_label[k] == label;
        }
      }
      std::sort(touched.begin(), touched.end());
      int64_t out = p.ptr[w];
      for (const int32_t other : touched) {
        double cov = static_cast<double>(agree[other]) / static_cast<double>(common[other]);
        cov = cov * scale;
        cov = cov - shift;
        p.partner[out] = other;
        p.common[out] = common[other];
        p.cov[out] = cov;
        ++out;
        common[other] = 0;
        agree[other] = 0;
      }
    }
  }
  err.rethrow();
  return p;
}

void covariation_row_sums(const WorkerPairs& p, double* out, int n_threads) {
  const int64_t W = p.n_workers;
  const int nt = resolve_threads(n_threads, W * W);
  FirstError err;
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> row;
    const bool ready = err.run([&] { row.resize(W); });
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < W; ++i) {
      if (!ready) continue;
      std::fill(row.begin(), row.end(), p.unobserved_cov);
      for (int64_t k = p.ptr[i]; k < p.ptr[i + 1]; ++k) row[p.partner[k]] = p.cov[k];
      out[i] = numpy_sum(row.data(), W);
    }
  }
  err.rethrow();
}

MMSRResult mmsr(const WorkerPairs& p, const double* u0, const double* v0, int n_iter, double tol, int64_t n_tasks,
                int n_threads) {
  LUAB_CHECK(n_iter >= 0, "n_iter must be >= 0, got ", n_iter);
  LUAB_CHECK(n_tasks >= 1, "n_tasks must be >= 1, got ", n_tasks);
  const int64_t W = p.n_workers;
  const int nt = resolve_threads(n_threads, std::max<int64_t>(p.ptr[W] * 8, W * W));
  const int64_t F = p.min_partners / 2 - 1;  // int(np.floor(sparsity / 2)) - 1
  const double lone_zero = 1.0 / std::sqrt(static_cast<double>(n_tasks));
  int64_t max_degree = 0;
  for (int64_t w = 0; w < W; ++w) max_degree = std::max(max_degree, p.ptr[w + 1] - p.ptr[w]);

  MMSRResult r;
  r.u.assign(u0, u0 + W);
  r.v.assign(v0, v0 + W);
  std::vector<double> u_prev(W), v_prev(W), row_sq(W);
  Buffer<double> scratch(static_cast<size_t>(nt * max_degree), Uninitialized{});
  for (int it = 0; it < n_iter; ++it) {
    u_prev = r.u;
    v_prev = r.v;
    update_factor(p, r.u.data(), r.v.data(), F, lone_zero, max_degree, scratch.data(), nt);
    update_factor(p, r.v.data(), r.u.data(), F, lone_zero, max_degree, scratch.data(), nt);
    const double loss = factor_change(r.u, r.v, u_prev, v_prev, row_sq, nt);
    r.loss_history.push_back(loss);
    if (loss < tol) break;
  }
  return r;
}

Buffer<double> weighted_vote_shares(const Crowd& c, const double* skills, bool in_runs, int n_threads) {
  const int64_t K = c.n_classes;
  const int nt = resolve_threads(n_threads, c.n_labels * K);
  checked_size("n_tasks * n_classes", {c.n_tasks, K});
  int64_t largest = 0;
  for (int64_t i = 0; i < c.n_tasks; ++i) largest = std::max(largest, c.task_ptr[i + 1] - c.task_ptr[i]);
  Buffer<double> out(c.n_tasks * K, Uninitialized{});
  FirstError err;
#pragma omp parallel num_threads(nt)
  {
    std::vector<double> score, skill;  // a task's [K] label scores; the skills behind one label, in row order
    std::vector<int64_t> done_for;      // done_for[y] == i: label y of task i is summed
    const bool ready = err.run([&] {
      score.resize(K);
      skill.resize(largest);
      done_for.assign(K, -1);
    });
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (!ready) continue;
      std::fill(score.begin(), score.end(), 0.0);  // unstack(fill_value=0): a label nobody gave scores 0
      const int64_t begin = c.task_ptr[i], end = c.task_ptr[i + 1];
      // one (task, label) group at a time, from its first row: the skills behind that label, in input order
      for (int64_t j = begin; j < end; ++j) {
        const int32_t y = c.task_label[j];
        if (done_for[y] == i) continue;
        done_for[y] = i;
        int64_t n = 0;
        for (int64_t k = j; k < end; ++k)
          if (c.task_label[k] == y) skill[n++] = skills[c.task_worker[k]];
        score[y] = pandas_group_sum([&](int64_t k) { return skill[k]; }, n, in_runs);
      }
      const double total = numpy_sum(score.data(), K);  // pandas' DataFrame.sum(axis=1): numpy's, per row
      double* row = out.data() + i * K;
      for (int64_t y = 0; y < K; ++y) row[y] = score[y] / total;
    }
  }
  err.rethrow();
  return out;
}

}  // namespace luab::aggregate
