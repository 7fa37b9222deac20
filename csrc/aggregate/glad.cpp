// GLAD's EM (glad.hpp): crowd-kit's objective over the CSR crowd, its E-step, and the M-step that minimises it with
// the port of scipy's conjugate gradient (cg_minimize.hpp).
#include "glad.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "../common/vmath.hpp"
#include "cg_minimize.hpp"
#include "em_kernels.hpp"

namespace luab::aggregate {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kChunk = 256;       // tasks (or workers) per OpenMP chunk and per partial sum
constexpr int64_t kWorkPerLabel = 8;  // an exp and a log1p per label: worth a second thread from ~32k labels

// ---- one label: log s, log(1 - s), s and 1 - s at x = alpha * exp(beta) ----------------------------------------

struct LabelTerms {
  double log_s, log_not_s, s, not_s;
};

// crowd-kit 1.4.2, glad.py _softplus: log(1 + e^x), but exactly x above 30 and exactly 0 below -30; then
// log s = -softplus(-x) and log(1 - s) = -softplus(x). Both logs and both probabilities come from e = exp(-|x|)
// and l = log1p(e) (LabelBatch), which keeps 1 - s accurate where s is near 1.
inline LabelTerms label_terms(double x, double e, double l) {
  const double inv = 1.0 / (1.0 + e);
  double softplus_x = std::max(x, 0.0) + l;
  double softplus_minus_x = std::max(-x, 0.0) + l;
  if (x > 30.0) {
    softplus_x = x;
    softplus_minus_x = 0.0;
  } else if (x < -30.0) {
    softplus_x = 0.0;
    softplus_minus_x = -x;
  }
  const bool up = x >= 0.0;
  return {-softplus_minus_x, -softplus_x, up ? inv : e * inv, up ? e * inv : inv};
}

// For the labels of a chunk of tasks: eb = exp(beta_t) per task, and per label x = alpha_w eb, e = exp(-|x|),
// l = log1p(e). These exps and logs are most of GLAD's time, so they run as whole arrays through libmvec (vmath)
// rather than one glibc call per label; log1p comes from log(1 + e) with the rounding of 1 + e corrected.
struct LabelBatch {
  std::vector<double> eb, x, e, l;
  std::vector<double> term, g;  // Objective::eval's per-label values

  void reserve(int64_t tasks, int64_t labels) {
    eb.resize(tasks);
    for (std::vector<double>* v : {&x, &e, &l, &term, &g}) v->resize(labels);
  }

  void compute(const Crowd& c, const double* alpha, const double* beta, int64_t t0, int64_t t1) {
    const int64_t j0 = c.task_ptr[t0], n = c.task_ptr[t1] - j0;
    vexp(beta + t0, eb.data(), t1 - t0);
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t j = c.task_ptr[t]; j < c.task_ptr[t + 1]; ++j) x[j - j0] = alpha[c.task_worker[j]] * eb[t - t0];
    for (int64_t i = 0; i < n; ++i) e[i] = -std::fabs(x[i]);
    vexp(e.data(), n);
    for (int64_t i = 0; i < n; ++i) l[i] = 1.0 + e[i];
    vlog(l.data(), l.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const double u = 1.0 + e[i];
      l[i] -= ((u - 1.0) - e[i]) / u;
    }
  }
};

// log N(d; 0, 1) as crowd-kit takes it, np.log(scipy.stats.norm.pdf(d)): -inf once exp(-d^2/2) underflows.
inline double log_normal(double d) {
  constexpr double kSqrt2Pi = 2.5066282746310002;
  const double h = d * d / 2.0;
  if (h < 700.0) return -h - std::log(kSqrt2Pi);
  return std::log(std::exp(-h) / kSqrt2Pi);
}

// scipy.special.logsumexp's way (scipy >= 1.15): the maxima are counted apart, log1p of the rest's share.
// Tied classes thus get bit-identical probabilities, as crowd-kit's do. tmp: K doubles of scratch.
inline void softmax_row(const double* row, int64_t K, double* out, double* tmp) {
  double mx = row[0];
  for (int64_t y = 1; y < K; ++y) mx = std::max(mx, row[y]);
  for (int64_t y = 0; y < K; ++y) tmp[y] = row[y] - mx;
  vexp(tmp, K);
  double n_max = 0.0, rest = 0.0;
  for (int64_t y = 0; y < K; ++y) {
    if (row[y] == mx) n_max += 1.0;
    else rest += tmp[y];
  }
  if (rest != 0.0) rest /= n_max;
  const double lse = std::log1p(rest) + std::log(n_max) + mx;
  for (int64_t y = 0; y < K; ++y) out[y] = row[y] - lse;
  vexp(out, K);
}

// ---- crowd-kit's Q over the CSR crowd --------------------------------------------------------------------------

// x = [alpha (W); beta (T)]. Q = sum over labels and classes c of p_t(c) log p(label | c) + the log N(., 1) priors
// of alpha and beta (crowd-kit 1.4.2, glad.py _compute_Q, _gradient_Q). A label's classes split into its own class
// (mass `own`, log s) and the K - 1 others (mass `other`, log((1 - s) / (K - 1)) each), so a label costs O(1).
class Objective {
 public:
  Objective(const Crowd& c, const GladModel& m, int n_threads)
      : c_(c), m_(m), nt_(n_threads), K_(m.n_classes), W_(c.n_workers), T_(c.n_tasks),
        log_k_minus_1_(std::log(static_cast<double>(m.n_classes - 1))), log_prior_(m.n_classes),
        label_at_(c.n_labels), own_(c.n_labels), other_(c.n_labels), d_alpha_(c.n_labels),
        q_data_((T_ + kChunk - 1) / kChunk), q_beta_(q_data_.size()), q_alpha_((W_ + kChunk - 1) / kChunk),
        batch_(n_threads) {
    for (int64_t y = 0; y < K_; ++y) log_prior_[y] = std::log(m.label_prior[y]);
    // each worker's labels as positions in the task-ordered arrays, in task order: the worker pass reads them
    // in a fixed order, ascending
    std::vector<int64_t> next(c.worker_ptr.begin(), c.worker_ptr.end() - 1);
    for (int64_t j = 0; j < c.n_labels; ++j) label_at_[next[c.task_worker[j]]++] = j;
    int64_t most = 0;
    for (int64_t chunk = 0; chunk < n_task_chunks(); ++chunk)
      most = std::max(most, c.task_ptr[chunk_end(chunk)] - c.task_ptr[chunk * kChunk]);
    for (LabelBatch& b : batch_) b.reserve(kChunk, most);
  }

  int64_t size() const { return W_ + T_; }
  int64_t n_evals() const { return n_evals_; }

  // post [T, K] at x (crowd-kit's _e_step), and each label's posterior mass on its class and on the others.
  void e_step(const double* x, double* post) {
    const int64_t K = K_;
    FirstError err;
#pragma omp parallel num_threads(nt_)
    {
      LabelBatch& batch = batch_[omp_get_thread_num()];
      std::vector<double> row, before, after;
      const bool ready = err.run([&] {
        row.resize(K);
        before.resize(K + 1);
        after.resize(K + 1);
      });
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < n_task_chunks(); ++chunk) {
        if (!ready) continue;
        const int64_t t0 = chunk * kChunk, j0 = c_.task_ptr[t0];
        batch.compute(c_, x, x + W_, t0, chunk_end(chunk));
        for (int64_t t = t0; t < chunk_end(chunk); ++t) {
          task_row(batch, t, j0, row.data());
          double* p = post + t * K;
          softmax_row(row.data(), K, p, before.data());
          // mass on every class but y, as a sum of the others (no cancellation when p[y] is near 1)
          before[0] = 0.0;
          for (int64_t y = 0; y < K; ++y) before[y + 1] = before[y] + p[y];
          after[K] = 0.0;
          for (int64_t y = K - 1; y >= 0; --y) after[y] = after[y + 1] + p[y];
          for (int64_t j = c_.task_ptr[t]; j < c_.task_ptr[t + 1]; ++j) {
            const int64_t z = c_.task_label[j];
            own_[j] = z < K ? p[z] : 0.0;
            other_[j] = z < K ? before[z] + after[z + 1] : before[K];
          }
        }
      }
    }
    err.rethrow();
  }

  // f = -Q at x and its gradient, with the posteriors of the last e_step (crowd-kit's _optimize_f, _optimize_df).
  double eval(const double* x, double* grad) {
    ++n_evals_;
    const double* alpha = x;
    const double* beta = x + W_;
    const int64_t n_worker_chunks = static_cast<int64_t>(q_alpha_.size());
#pragma omp parallel num_threads(nt_)
    {
      LabelBatch& batch = batch_[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < n_task_chunks(); ++chunk) {
        const int64_t t0 = chunk * kChunk, j0 = c_.task_ptr[t0];
        batch.compute(c_, alpha, beta, t0, chunk_end(chunk));
        label_values(batch, j0, c_.task_ptr[chunk_end(chunk)] - j0);
        double q = 0.0, q_beta = 0.0;
        for (int64_t t = t0; t < chunk_end(chunk); ++t) {
          const double eb = batch.eb[t - t0];
          double d_beta = 0.0;
          for (int64_t j = c_.task_ptr[t]; j < c_.task_ptr[t + 1]; ++j) {
            q += batch.term[j - j0];
            d_alpha_[j] = batch.g[j - j0] * eb;           // dx/d alpha = e^beta
            d_beta += batch.g[j - j0] * batch.x[j - j0];  // dx/d beta = alpha e^beta = x
          }
          const double d = beta[t] - m_.beta_mean[t];
          grad[W_ + t] = -(d_beta - d);
          q_beta += log_normal(d);
        }
        q_data_[chunk] = q;
        q_beta_[chunk] = q_beta;
      }  // implicit barrier: d_alpha_ is complete
#pragma omp for schedule(dynamic, 1)
      for (int64_t chunk = 0; chunk < n_worker_chunks; ++chunk) {
        double q_alpha = 0.0;
        for (int64_t w = chunk * kChunk; w < std::min(W_, (chunk + 1) * kChunk); ++w) {
          double d_alpha = 0.0;
          for (int64_t i = c_.worker_ptr[w]; i < c_.worker_ptr[w + 1]; ++i) d_alpha += d_alpha_[label_at_[i]];
          const double d = alpha[w] - m_.alpha_mean[w];
          grad[w] = -(d_alpha - d);
          q_alpha += log_normal(d);
        }
        q_alpha_[chunk] = q_alpha;
      }
    }
    double q = 0.0, q_alpha = 0.0, q_beta = 0.0;
    for (double v : q_data_) q += v;
    for (double v : q_alpha_) q_alpha += v;
    for (double v : q_beta_) q_beta += v;
    q = q + q_alpha + q_beta;
    return std::isnan(q) ? kInf : -q;  // crowd-kit's Q is -inf where it would be NaN
  }

 private:
  int64_t n_task_chunks() const { return static_cast<int64_t>(q_data_.size()); }
  int64_t chunk_end(int64_t chunk) const { return std::min(T_, (chunk + 1) * kChunk); }

  // row[c] = sum over task t's labels of log p(label | c), in label order, as crowd-kit's groupby sums them,
  // plus log p(c). The batch holds the task's chunk, whose first label is j0.
  void task_row(const LabelBatch& batch, int64_t t, int64_t j0, double* row) const {
    const int64_t K = K_;
    std::fill(row, row + K, 0.0);
    for (int64_t j = c_.task_ptr[t]; j < c_.task_ptr[t + 1]; ++j) {
      const LabelTerms s = label_terms(batch.x[j - j0], batch.e[j - j0], batch.l[j - j0]);
      const double off = s.log_not_s - log_k_minus_1_;
      const int64_t z = c_.task_label[j];
      const double keep = z < K ? row[z] : 0.0;
      for (int64_t y = 0; y < K; ++y) row[y] += off;
      // with K = 1, crowd-kit's own-class term is log s + 0 * inf = NaN, which its sums skip
      if (z < K) row[z] = K == 1 ? keep : keep + s.log_s;
    }
    for (int64_t y = 0; y < K; ++y) row[y] += log_prior_[y];
  }

  // Each label's term of Q and its dQ/dx, for the n labels from j0 whose x, e, l the batch holds: one pass over
  // contiguous arrays, which GCC vectorises (label_terms is branch-free). d/dx of a label's term is
  // own (1 - s) - other s.
  void label_values(LabelBatch& b, int64_t j0, int64_t n) const {
    const double* own = own_.data() + j0;
    const double* other = other_.data() + j0;
    const double lk = log_k_minus_1_;
    for (int64_t i = 0; i < n; ++i) {
      const LabelTerms s = label_terms(b.x[i], b.e[i], b.l[i]);
      b.term[i] = own[i] * s.log_s + other[i] * (s.log_not_s - lk);
      b.g[i] = own[i] * s.not_s - other[i] * s.s;
    }
    if (K_ != 1) return;
    // K = 1: crowd-kit's own-class terms are log s + 0 * inf = NaN, which its sums skip (see task_row)
    for (int64_t i = 0; i < n; ++i) {
      const LabelTerms s = label_terms(b.x[i], b.e[i], b.l[i]);
      b.term[i] = c_.task_label[j0 + i] < K_ ? 0.0 : other[i] * (s.log_not_s - lk);
    }
  }

  const Crowd& c_;
  const GladModel& m_;
  const int nt_;
  const int64_t K_, W_, T_;
  const double log_k_minus_1_;
  std::vector<double> log_prior_;
  std::vector<int64_t> label_at_;           // [N] by worker (worker_ptr): positions in the task order
  std::vector<double> own_, other_;         // [N] task order: posterior mass on the label's class, on the rest
  std::vector<double> d_alpha_;             // [N] task order: each label's dQ/d alpha_w
  std::vector<double> q_data_, q_beta_;     // per task chunk
  std::vector<double> q_alpha_;             // per worker chunk
  std::vector<LabelBatch> batch_;           // per thread
  int64_t n_evals_ = 0;
};

}  // namespace

GladResult glad(const Crowd& c, const GladModel& m, const GladOptions& opt, const GladProgress& progress) {
  const int64_t K = m.n_classes;
  LUAB_CHECK(K >= 1 && c.n_classes == K + 1, "the crowd must have n_classes + 1 classes (the last: a label "
             "outside the model's classes), got ", c.n_classes, " for n_classes=", K);
  checked_size("n_tasks * n_classes", {c.n_tasks, K});
  const int nt = resolve_threads(opt.n_threads, c.n_labels * kWorkPerLabel);
  Objective obj(c, m, nt);
  ConjugateGradient cg([&obj](const double* x, double* grad) { return obj.eval(x, grad); },
                       static_cast<size_t>(obj.size()));
  std::vector<double> x(obj.size()), grad(obj.size());
  for (int64_t w = 0; w < c.n_workers; ++w) x[w] = m.alpha_init != nullptr ? m.alpha_init[w] : 1.0;
  for (int64_t t = 0; t < c.n_tasks; ++t) x[c.n_workers + t] = m.beta_init != nullptr ? m.beta_init[t] : 1.0;

  // crowd-kit's order: E-step and (unnormalised) Q at the start, then per iteration E-step, M-step, Q / rows
  GladResult r;
  r.post = Buffer<double>(static_cast<size_t>(c.n_tasks * K), Uninitialized{});
  obj.e_step(x.data(), r.post.data());
  double q = -obj.eval(x.data(), grad.data());
  const double n_rows = static_cast<double>(c.n_labels) * static_cast<double>(K);
  bool small_before = false;
  for (int it = 0; it < opt.n_iter; ++it) {
    if (progress) progress(it, q);
    const double last_q = q;
    if (it > 0) obj.e_step(x.data(), r.post.data());  // the first would repeat the start's, at the same x
    q = -cg.minimize(x, opt.m_step_max_iter, opt.m_step_tol) / n_rows;
    r.loss_history.push_back(q);
    r.n_iter_run = it + 1;
    // crowd-kit stops at the first gain below tol, and so does this where Q fell (the EM no longer climbs; on MS
    // crowd-kit's fit ends there) or where the M-step stopped on its own (gradient tolerance, or no step found: the
    // fit is at crowd-kit's point). A gain in [0, tol) after an M-step cut short at m_step_max_iter is different:
    // the EM is still climbing, its gains hover around tol (rte: 2.2, 2.9, 3.6, 1.5, 0.5 x 1e-5 in crowd-kit's last
    // iterations) and one small gain stops it at a random point of that climb; a second one in a row must confirm
    // it, so the final Q does not fall short of crowd-kit's for want of an iteration.
    const double gain = q - last_q;
    const bool small = gain < opt.tol;
    if (small && (gain < 0.0 || !cg.hit_max_iter() || small_before)) break;
    small_before = small;
  }
  r.n_evaluations = obj.n_evals();
  r.alphas.assign(x.begin(), x.begin() + c.n_workers);
  r.betas.assign(x.begin() + c.n_workers, x.end());
  return r;
}

}  // namespace luab::aggregate
