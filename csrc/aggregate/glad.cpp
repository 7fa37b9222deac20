// GLAD's EM (glad.hpp): crowd-kit's objective over the CSR crowd, its E-step, and the conjugate-gradient M-step.
#include "glad.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <vector>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "../common/vmath.hpp"
#include "em_kernels.hpp"
#include "row_lanes.hpp"

namespace luab::aggregate {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
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

// ---- scipy's minimize(method="CG"), ported (scipy 1.17: optimize/_optimize.py _minimize_cg, _linesearch.py,
// _dcsrch.py): the same steps, tests and constants, so the M-step follows crowd-kit's path ----------------------

// in kLanes fixed chains (row_lanes.hpp): a single running sum over W + T elements would be latency-bound
double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double lanes[kLanes] = {};
  lane_dot(a.data(), b.data(), static_cast<int64_t>(a.size()), lanes);
  double s = 0.0;
  for (double v : lanes) s += v;
  return s;
}

double max_abs(const std::vector<double>& a) {  // np.amax(np.abs(a)): NaN wins
  double m = 0.0;
  for (double v : a) m = (std::isnan(v) || std::isnan(m)) ? kNaN : std::max(m, std::fabs(v));
  return m;
}

// Python's max(a, b) and min(a, b) (the first argument unless the second compares greater / less).
inline double py_max(double a, double b) { return b > a ? b : a; }
inline double py_min(double a, double b) { return b < a ? b : a; }
inline double np_clip(double v, double lo, double hi) { return std::isnan(v) ? v : std::min(std::max(v, lo), hi); }
inline double np_sign(double v) { return std::isnan(v) ? v : (v > 0.0) - (v < 0.0); }

// numpy's errstate(divide="raise", over="raise", invalid="raise") for the interpolation formulas: an operation
// that divides by zero, overflows, or makes a NaN from non-NaN operands marks the result as "no minimiser".
struct Strict {
  bool failed = false;
  double check(double r, double a, double b) {
    const bool nan_made = std::isnan(r) && !std::isnan(a) && !std::isnan(b);
    const bool inf_made = std::isinf(r) && std::isfinite(a) && std::isfinite(b);
    failed = failed || nan_made || inf_made;
    return r;
  }
  double add(double a, double b) { return check(a + b, a, b); }
  double sub(double a, double b) { return check(a - b, a, b); }
  double mul(double a, double b) { return check(a * b, a, b); }
  double div(double a, double b) { return check(a / b, a, b); }
  double pow(double a, double n) { return check(std::pow(a, n), a, n); }
  double sqrt(double a) { return check(std::sqrt(a), a, 0.0); }
};

// scipy _cubicmin: minimiser of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a.
std::optional<double> cubicmin(double a, double fa, double fpa, double b, double fb, double c, double fc) {
  Strict s;
  const double C = fpa;
  const double db = s.sub(b, a), dc = s.sub(c, a);
  const double denom = s.mul(s.pow(s.mul(db, dc), 2.0), s.sub(db, dc));
  const double v0 = s.sub(s.sub(fb, fa), s.mul(C, db));
  const double v1 = s.sub(s.sub(fc, fa), s.mul(C, dc));
  double A = s.add(s.mul(s.pow(dc, 2.0), v0), s.mul(-s.pow(db, 2.0), v1));
  double B = s.add(s.mul(-s.pow(dc, 3.0), v0), s.mul(s.pow(db, 3.0), v1));
  A = s.div(A, denom);
  B = s.div(B, denom);
  const double radical = s.sub(s.mul(B, B), s.mul(s.mul(3.0, A), C));
  const double xmin = s.add(a, s.div(s.add(-B, s.sqrt(radical)), s.mul(3.0, A)));
  if (s.failed || !std::isfinite(xmin)) return std::nullopt;
  return xmin;
}

// scipy _quadmin: minimiser of the quadratic through (a, fa), (b, fb) with slope fpa at a.
std::optional<double> quadmin(double a, double fa, double fpa, double b, double fb) {
  Strict s;
  const double db = s.sub(b, a);
  const double B = s.div(s.sub(s.sub(fb, fa), s.mul(fpa, db)), s.mul(db, db));
  const double xmin = s.sub(a, s.div(fpa, s.mul(2.0, B)));
  if (s.failed || !std::isfinite(xmin)) return std::nullopt;
  return xmin;
}

// scipy _dcsrch.dcstep (MINPACK-2, More' and Thuente): a safeguarded trial step, and the bracket's update.
struct Bracket {
  double stx, fx, dx, sty, fy, dy;
  bool brackt;
};

double dcstep(Bracket& br, double stp, double fp, double dp, double stpmin, double stpmax) {
  const double sgnd = np_sign(dp) * np_sign(br.dx);
  auto gamma_of = [](double theta, double u, double v, bool clip_at_zero) {
    const double s = py_max(py_max(std::fabs(theta), std::fabs(u)), std::fabs(v));
    const double q = (theta / s) * (theta / s) - (u / s) * (v / s);
    return s * std::sqrt(clip_at_zero ? py_max(0.0, q) : q);
  };
  const double stx = br.stx, fx = br.fx, dx = br.dx;
  double stpf;
  if (fp > fx) {
    const double theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp;
    double gamma = gamma_of(theta, dx, dp, false);
    if (stp < stx) gamma = -gamma;
    const double r = ((gamma - dx) + theta) / (((gamma - dx) + gamma) + dp);
    const double stpc = stx + r * (stp - stx);
    const double stpq = stx + ((dx / ((fx - fp) / (stp - stx) + dx)) / 2.0) * (stp - stx);
    stpf = std::fabs(stpc - stx) <= std::fabs(stpq - stx) ? stpc : stpc + (stpq - stpc) / 2.0;
    br.brackt = true;
  } else if (sgnd < 0.0) {
    const double theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp;
    double gamma = gamma_of(theta, dx, dp, false);
    if (stp > stx) gamma = -gamma;
    const double r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + dx);
    const double stpc = stp + r * (stx - stp);
    const double stpq = stp + (dp / (dp - dx)) * (stx - stp);
    stpf = std::fabs(stpc - stp) > std::fabs(stpq - stp) ? stpc : stpq;
    br.brackt = true;
  } else if (std::fabs(dp) < std::fabs(dx)) {
    const double theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp;
    double gamma = gamma_of(theta, dx, dp, true);
    if (stp > stx) gamma = -gamma;
    const double r = ((gamma - dp) + theta) / ((gamma + (dx - dp)) + gamma);
    double stpc;
    if (r < 0.0 && gamma != 0.0) stpc = stp + r * (stx - stp);
    else stpc = stp > stx ? stpmax : stpmin;
    const double stpq = stp + (dp / (dp - dx)) * (stx - stp);
    if (br.brackt) {
      stpf = std::fabs(stpc - stp) < std::fabs(stpq - stp) ? stpc : stpq;
      stpf = stp > stx ? py_min(stp + 0.66 * (br.sty - stp), stpf) : py_max(stp + 0.66 * (br.sty - stp), stpf);
    } else {
      stpf = np_clip(std::fabs(stpc - stp) > std::fabs(stpq - stp) ? stpc : stpq, stpmin, stpmax);
    }
  } else if (br.brackt) {
    const double theta = 3.0 * (fp - br.fy) / (br.sty - stp) + br.dy + dp;
    double gamma = gamma_of(theta, br.dy, dp, false);
    if (stp > br.sty) gamma = -gamma;
    const double r = ((gamma - dp) + theta) / (((gamma - dp) + gamma) + br.dy);
    stpf = stp + r * (br.sty - stp);
  } else {
    stpf = stp > stx ? stpmax : stpmin;
  }
  if (fp > fx) {
    br.sty = stp, br.fy = fp, br.dy = dp;
  } else {
    if (sgnd < 0.0) br.sty = stx, br.fy = fx, br.dy = dx;
    br.stx = stp, br.fx = fp, br.dx = dp;
  }
  return stpf;
}

// f and f' along x + s p. The searches ask for f(s) and then f'(s) at the same s, so one fused evaluation of f
// and its gradient serves both (scipy's ScalarFunction caches by point the same way); xt and gt then hold the
// point and gradient of the last s evaluated, where every search ends.
class Line {
 public:
  Line(Objective& obj, const std::vector<double>& x, const std::vector<double>& p, std::vector<double>& xt,
       std::vector<double>& gt)
      : obj_(obj), x_(x), p_(p), xt_(xt), gt_(gt) {}
  double phi(double s) {
    at(s);
    return f_;
  }
  double derphi(double s) {
    at(s);
    return dot(gt_, p_);
  }

 private:
  void at(double s) {
    if (evaluated_ && s == s_) return;
    for (size_t i = 0; i < xt_.size(); ++i) xt_[i] = x_[i] + s * p_[i];
    f_ = obj_.eval(xt_.data(), gt_.data());
    s_ = s;
    evaluated_ = true;
  }
  Objective& obj_;
  const std::vector<double>& x_;
  const std::vector<double>& p_;
  std::vector<double>& xt_;
  std::vector<double>& gt_;
  bool evaluated_ = false;
  double s_ = kNaN, f_ = kNaN;
};

// An accepted step; the gradient there is the Line's last one.
struct StepFound {
  double alpha, f;
};

// The sufficient-descent test scipy's CG passes to its line searches (Polak-Ribiere+ needs it).
using Accept = std::function<bool(double alpha)>;

constexpr double kC1 = 1e-4, kC2 = 0.4;  // _minimize_cg's Armijo and curvature constants
constexpr double kAmin = 1e-100, kAmax = 1e100, kXtol = 1e-14;

double first_step(double phi0, double old_phi0, double derphi0) {  // both searches' initial step
  double a = derphi0 != 0.0 ? py_min(1.0, 1.01 * 2 * (phi0 - old_phi0) / derphi0) : 1.0;
  return a < 0.0 ? 1.0 : a;
}

// scipy line_search_wolfe1: MINPACK's dcsrch (_dcsrch.DCSRCH, stages, bracket and safeguards as there).
std::optional<StepFound> search_dcsrch(Line& line, double phi0, double old_phi0, double derphi0) {
  double stp = first_step(phi0, old_phi0, derphi0);
  if (stp < kAmin || stp > kAmax || derphi0 >= 0.0) return std::nullopt;  // its START errors
  const double ginit = derphi0, gtest = kC1 * ginit;
  Bracket br{0.0, phi0, ginit, 0.0, phi0, ginit, false};
  int stage = 1;
  double width = kAmax - kAmin, width1 = width / 0.5;
  double stmin = 0.0, stmax = stp + 4.0 * stp;
  for (int it = 1; it < 100; ++it) {  // the START call was the first of dcsrch's 100
    if (!std::isfinite(stp)) return std::nullopt;
    const double f = line.phi(stp), g = line.derphi(stp);
    const double ftest = phi0 + stp * gtest;
    if (stage == 1 && f <= ftest && g >= 0.0) stage = 2;
    const bool warn = (br.brackt && (stp <= stmin || stp >= stmax)) ||
                (br.brackt && stmax - stmin <= kXtol * stmax) || (stp == kAmax && f <= ftest && g <= gtest) ||
                (stp == kAmin && (f > ftest || g >= gtest));
    if (f <= ftest && std::fabs(g) <= kC2 * -ginit) return StepFound{stp, f};  // CONVERGENCE beats a warning
    if (warn) return std::nullopt;
    if (stage == 1 && f <= br.fx && f > ftest) {  // the modified function psi(stp) = f - f(0) - ftol stp f'(0)
      Bracket m{br.stx, br.fx - br.stx * gtest, br.dx - gtest, br.sty, br.fy - br.sty * gtest, br.dy - gtest,
                br.brackt};
      stp = dcstep(m, stp, f - stp * gtest, g - gtest, stmin, stmax);
      br = {m.stx, m.fx + m.stx * gtest, m.dx + gtest, m.sty, m.fy + m.sty * gtest, m.dy + gtest, m.brackt};
    } else {
      stp = dcstep(br, stp, f, g, stmin, stmax);
    }
    if (br.brackt) {
      if (std::fabs(br.sty - br.stx) >= 0.66 * width1) stp = br.stx + 0.5 * (br.sty - br.stx);
      width1 = width;
      width = std::fabs(br.sty - br.stx);
      stmin = py_min(br.stx, br.sty);
      stmax = py_max(br.stx, br.sty);
    } else {
      stmin = stp + 1.1 * (stp - br.stx);
      stmax = stp + 4.0 * (stp - br.stx);
    }
    stp = np_clip(stp, kAmin, kAmax);
    if ((br.brackt && (stp <= stmin || stp >= stmax)) || (br.brackt && stmax - stmin <= kXtol * stmax)) stp = br.stx;
  }
  return std::nullopt;  // dcsrch did not converge within its iterations
}

// scipy _zoom (Nocedal and Wright, algorithm 3.6) inside scalar_search_wolfe2.
std::optional<StepFound> zoom(Line& line, double a_lo, double a_hi, double phi_lo, double phi_hi, double derphi_lo,
                              double phi0, double derphi0, const Accept& accept) {
  double phi_rec = phi0, a_rec = 0.0;
  for (int i = 0; i <= 10; ++i) {
    const double dalpha = a_hi - a_lo;
    const double a = dalpha < 0 ? a_hi : a_lo, b = dalpha < 0 ? a_lo : a_hi;
    std::optional<double> a_j;
    if (i > 0) {
      const double cchk = 0.2 * dalpha;
      a_j = cubicmin(a_lo, phi_lo, derphi_lo, a_hi, phi_hi, a_rec, phi_rec);
      if (a_j && (*a_j > b - cchk || *a_j < a + cchk)) a_j.reset();
    }
    if (!a_j) {
      const double qchk = 0.1 * dalpha;
      a_j = quadmin(a_lo, phi_lo, derphi_lo, a_hi, phi_hi);
      if (!a_j || *a_j > b - qchk || *a_j < a + qchk) a_j = a_lo + 0.5 * dalpha;
    }
    const double phi_aj = line.phi(*a_j);
    if (phi_aj > phi0 + kC1 * *a_j * derphi0 || phi_aj >= phi_lo) {
      phi_rec = phi_hi, a_rec = a_hi, a_hi = *a_j, phi_hi = phi_aj;
      continue;
    }
    const double derphi_aj = line.derphi(*a_j);
    if (std::fabs(derphi_aj) <= -kC2 * derphi0 && accept(*a_j)) return StepFound{*a_j, phi_aj};
    if (derphi_aj * (a_hi - a_lo) >= 0) {
      phi_rec = phi_hi, a_rec = a_hi, a_hi = a_lo, phi_hi = phi_lo;
    } else {
      phi_rec = phi_lo, a_rec = a_lo;
    }
    a_lo = *a_j, phi_lo = phi_aj, derphi_lo = derphi_aj;
  }
  return std::nullopt;
}

// scipy scalar_search_wolfe2 (maxiter 10, amax 1e100), the fallback when dcsrch fails or its step is refused.
std::optional<StepFound> search_wolfe2(Line& line, double phi0, double old_phi0, double derphi0,
                                       const Accept& accept) {
  double alpha0 = 0.0, alpha1 = py_min(first_step(phi0, old_phi0, derphi0), kAmax);
  double phi_a1 = line.phi(alpha1), phi_a0 = phi0, derphi_a0 = derphi0;
  for (int i = 0; i < 10; ++i) {
    if (alpha1 == 0.0 || alpha0 > kAmax) return std::nullopt;
    if (phi_a1 > phi0 + kC1 * alpha1 * derphi0 || (phi_a1 >= phi_a0 && i > 0))
      return zoom(line, alpha0, alpha1, phi_a0, phi_a1, derphi_a0, phi0, derphi0, accept);
    const double derphi_a1 = line.derphi(alpha1);
    if (std::fabs(derphi_a1) <= -kC2 * derphi0 && accept(alpha1)) return StepFound{alpha1, phi_a1};
    if (derphi_a1 >= 0.0) return zoom(line, alpha1, alpha0, phi_a1, phi_a0, derphi_a1, phi0, derphi0, accept);
    alpha0 = alpha1;
    alpha1 = py_min(2.0 * alpha1, kAmax);
    phi_a0 = phi_a1;
    phi_a1 = line.phi(alpha1);
    derphi_a0 = derphi_a1;
  }
  return StepFound{alpha1, phi_a1};  // out of iterations: scipy takes the last step, unchecked
}

// scipy _minimize_cg with jac, norm=inf: minimises f from x (in place) and returns f(x).
class ConjugateGradient {
 public:
  explicit ConjugateGradient(Objective& obj)
      : obj_(obj), n_(obj.size()), g_(n_), p_(n_), xt_(n_), gt_(n_), p_next_(n_), yk_(n_) {}

  double minimize(std::vector<double>& x, int max_iter, double gtol) {
    double f = obj_.eval(x.data(), g_.data());
    double old_f = f + std::sqrt(dot(g_, g_)) / 2;  // "sets the initial step guess to dx ~ 1"
    for (size_t i = 0; i < n_; ++i) p_[i] = -g_[i];
    double gnorm = max_abs(g_);
    for (int k = 0; gnorm > gtol && k < max_iter; ++k) {
      const double deltak = dot(g_, g_);
      double accepted_alpha = kNaN;  // the step whose Polak-Ribiere direction p_next_ holds
      // the next direction from the gradient at x + alpha p (the Line's last); accept on sufficient descent
      const Accept descent = [&](double alpha) {
        for (size_t i = 0; i < n_; ++i) yk_[i] = gt_[i] - g_[i];  // scipy's yk
        const double yk_dot = dot(yk_, gt_);
        const double beta_k = py_max(0.0, yk_dot / deltak);
        for (size_t i = 0; i < n_; ++i) p_next_[i] = -gt_[i] + beta_k * p_[i];
        accepted_alpha = alpha;
        return max_abs(gt_) <= gtol || dot(p_next_, gt_) <= -0.01 * dot(gt_, gt_);
      };
      Line line(obj_, x, p_, xt_, gt_);
      const double derphi0 = dot(g_, p_);
      std::optional<StepFound> step = search_dcsrch(line, f, old_f, derphi0);
      if (step) {
        line.phi(step->alpha);
        if (!descent(step->alpha)) step.reset();
      }
      if (!step) step = search_wolfe2(line, f, old_f, derphi0, descent);
      if (!step) break;  // scipy: "Desired error not necessarily achieved due to precision loss"
      line.phi(step->alpha);  // the gradient at the step (already evaluated: the searches end there)
      if (!(accepted_alpha == step->alpha)) descent(step->alpha);
      x.swap(xt_);
      g_.swap(gt_);
      p_.swap(p_next_);
      old_f = f;
      f = step->f;
      gnorm = max_abs(g_);
    }
    return f;
  }

 private:
  Objective& obj_;
  const size_t n_;
  std::vector<double> g_, p_, xt_, gt_, p_next_, yk_;
};

}  // namespace

GladResult glad(const Crowd& c, const GladModel& m, const GladOptions& opt, const GladProgress& progress) {
  const int64_t K = m.n_classes;
  LUAB_CHECK(K >= 1 && c.n_classes == K + 1, "the crowd must have n_classes + 1 classes (the last: a label "
             "outside the model's classes), got ", c.n_classes, " for n_classes=", K);
  checked_size("n_tasks * n_classes", {c.n_tasks, K});
  const int nt = resolve_threads(opt.n_threads, c.n_labels * kWorkPerLabel);
  Objective obj(c, m, nt);
  ConjugateGradient cg(obj);
  std::vector<double> x(obj.size()), grad(obj.size());
  for (int64_t w = 0; w < c.n_workers; ++w) x[w] = m.alpha_init != nullptr ? m.alpha_init[w] : 1.0;
  for (int64_t t = 0; t < c.n_tasks; ++t) x[c.n_workers + t] = m.beta_init != nullptr ? m.beta_init[t] : 1.0;

  // crowd-kit's order: E-step and (unnormalised) Q at the start, then per iteration E-step, M-step, Q / rows
  GladResult r;
  r.post = Buffer<double>(static_cast<size_t>(c.n_tasks * K), Uninitialized{});
  obj.e_step(x.data(), r.post.data());
  double q = -obj.eval(x.data(), grad.data());
  const double n_rows = static_cast<double>(c.n_labels) * static_cast<double>(K);
  for (int it = 0; it < opt.n_iter; ++it) {
    if (progress) progress(it, q);
    const double last_q = q;
    if (it > 0) obj.e_step(x.data(), r.post.data());  // the first would repeat the start's, at the same x
    q = -cg.minimize(x, opt.m_step_max_iter, opt.m_step_tol) / n_rows;
    r.loss_history.push_back(q);
    r.n_iter_run = it + 1;
    if (q - last_q < opt.tol) break;
  }
  r.n_evaluations = obj.n_evals();
  r.alphas.assign(x.begin(), x.begin() + c.n_workers);
  r.betas.assign(x.begin() + c.n_workers, x.end());
  return r;
}

}  // namespace luab::aggregate
