// MACE's E- and M-steps on the CSR crowd and the restart driver (mace.hpp). The E-step runs one task per
// iteration, the M-step one worker per iteration, and the log-likelihood is summed in fixed chunks added in
// order: results are bitwise the same for any thread count. Every table is allocated once per fit.
#include "mace.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "../common/stream_store.hpp"
#include "../common/vmath.hpp"
#include "em_kernels.hpp"
#include "row_lanes.hpp"

namespace luab::aggregate {

double digamma(double x) {
  constexpr double kPi = 3.14159265358979323846;
  if (std::isnan(x)) return x;
  if (x == 0.0) return std::signbit(x) ? std::numeric_limits<double>::infinity()
                                       : -std::numeric_limits<double>::infinity();
  if (x < 0.0) {  // the poles (and −inf); elsewhere the reflection ψ(x) = ψ(1 − x) − π / tan(πx)
    if (x == std::floor(x)) return std::numeric_limits<double>::quiet_NaN();
    return digamma(1.0 - x) - kPi / std::tan(kPi * x);
  }
  if (std::isinf(x)) return x;
  // ψ(x) = ψ(x + 1) − 1/x up to x >= 10, where the asymptotic series to x^-14 is exact to ~1e-17
  double shift = 0.0;
  for (; x < 10.0; x += 1.0) shift -= 1.0 / x;
  const double r = 1.0 / (x * x);
  // Σ_n B_2n / (2n x^2n) for n = 1..7 (Bernoulli numbers), in Horner form in r = 1/x²
  const double tail =
      r * (1.0 / 12 - r * (1.0 / 120 - r * (1.0 / 252 - r * (1.0 / 240 - r * (1.0 / 132 - r * (691.0 / 32760 -
                                                                                                   r / 12))))));
  return shift + std::log(x) - 0.5 / x - tail;
}

namespace {

// The E-step's unit of work (one OpenMP chunk) and of the log-likelihood's partial sums.
constexpr int64_t kTaskChunk = 256;
// crowd-kit adds this to each task's marginal likelihood before its log (mace.py, _e_step)
constexpr double kMarginalEps = 1e-8;

// K rounded up to whole blocks of kLanes classes: the stride of the E-step's per-thread rows.
inline int64_t padded(int64_t K) { return (K + kLanes - 1) / kLanes * kLanes; }

// Everything one fit touches, allocated before the first iteration.
struct Tables {
  Buffer<double> post;                // [T, K] p(true class y | labels of task i)
  Buffer<double> factors;             // [W, K, 2] (a, a + b) of each (worker, label): see e_step
  Buffer<double> spam, spam_next;     // [W, 2]
  Buffer<double> theta, theta_next;   // [W, K]
  Buffer<double> rows;                // [threads, K rounded up to 8] the E-step's row being multiplied up
  Buffer<double> scratch;             // [threads, 3K] the M-step's per-worker sums and coefficients
  std::vector<double> ll_partial;     // [chunks]
};

// factors[w][z] = (a, a + b): p(answer z | true class y, w) is a = spam[w][0] · theta[w][z] (the worker spams
// and happens to answer z) for y != z, and a + b with b = spam[w][1] (or knows it) for y == z. One table per
// parameter set, so that a label costs one 16-byte read instead of three (the M-step reads it too).
void fill_factors(int64_t W, int64_t K, const double* spam, const double* theta, double* factors, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t w = 0; w < W; ++w)
    for (int64_t z = 0; z < K; ++z) {
      const double a = spam[2 * w] * theta[w * K + z];
      factors[2 * (w * K + z)] = a;
      factors[2 * (w * K + z) + 1] = a + spam[2 * w + 1];
    }
}

// row[y] = Π over task i's labels (w, z), in input order, of factors[w][z][y == z] (see fill_factors), for a
// small compile-time K: the row lives in registers.
template <int64_t KS>
inline void multiply_labels_small(const Crowd& c, int64_t i, const double* factors, double* row) {
  for (int64_t y = 0; y < KS; ++y) row[y] = 1.0;
  for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
    const int64_t z = c.task_label[j];
    const double* f = factors + 2 * (static_cast<int64_t>(c.task_worker[j]) * KS + z);
    const double given = row[z] * f[1];
    for (int64_t y = 0; y < KS; ++y) row[y] *= f[0];
    row[z] = given;
  }
}

// NB blocks of 8 classes from y0, each held in one register across all of task i's labels, so that nothing is
// stored between labels (the label-major loop reloads the row it has just stored: a store-forwarding stall per
// label, ~2× slower at K = 10); NB independent products hide the multiply's latency.
template <int NB>
inline void multiply_blocks(const Crowd& c, int64_t i, int64_t y0, const double* factors, double* row) {
  const int64_t K = c.n_classes;
  const Lanes8i lane = {0, 1, 2, 3, 4, 5, 6, 7};
  Lanes8 acc[NB];
  for (int b = 0; b < NB; ++b) acc[b] = Lanes8{} + 1.0;
  for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
    // with many classes the factor table outgrows L2, and each label reads it at random
    if (y0 == 0 && j + kPrefetchAhead < c.n_labels)
      __builtin_prefetch(factors + 2 * (static_cast<int64_t>(c.task_worker[j + kPrefetchAhead]) * K +
                                        c.task_label[j + kPrefetchAhead]));
    const long z = c.task_label[j];
    const double* f = factors + 2 * (static_cast<int64_t>(c.task_worker[j]) * K + z);
    const Lanes8 a = Lanes8{} + f[0], ab = Lanes8{} + f[1];
    for (int b = 0; b < NB; ++b) acc[b] *= lane + (y0 + kLanes * b) == z ? ab : a;
  }
  std::memcpy(row + y0, acc, sizeof(acc));
}

// The same for any K: row has room for K rounded up to 8 classes; the lanes past K are scratch.
inline void multiply_labels_blocked(const Crowd& c, int64_t i, const double* factors, double* row) {
  const int64_t K = c.n_classes;
  int64_t y0 = 0;
  for (; y0 + 4 * kLanes <= K; y0 += 4 * kLanes) multiply_blocks<4>(c, i, y0, factors, row);
  switch ((K - y0 + kLanes - 1) / kLanes) {
    case 3: multiply_blocks<3>(c, i, y0, factors, row); break;
    case 2: multiply_blocks<2>(c, i, y0, factors, row); break;
    case 1: multiply_blocks<1>(c, i, y0, factors, row); break;
    default: break;
  }
}

// post[i] ∝ Π over task i's labels (w, z) of p(z | y, w), multiplied in the labels' input order (crowd-kit 1.4.2,
// mace.py: a groupby product; it then divides by K, the uniform class prior). Returns the log marginal likelihood
// as crowd-kit computes it: Σ_i log(Σ_y product_i(y) / K + 1e-8). KS: K when known at compile time (the few
// classes of most crowds: the row loops then unroll), else 0.
template <int64_t KS>
double e_step(const Crowd& c, const double* factors, Tables& t, int n_threads) {
  const int64_t K = KS > 0 ? KS : c.n_classes;
  const double k = static_cast<double>(K);
  const int64_t n_chunks = static_cast<int64_t>(t.ll_partial.size());
  double* post = t.post.data();
  double* partial = t.ll_partial.data();
#pragma omp parallel num_threads(n_threads)
  {
    // the product builds up in this thread's cache-resident row; a wide row then goes to post with streaming
    // stores (written through the caches, each line of a [T, K] table far larger than them would first be read)
    double* row = t.rows.data() + static_cast<int64_t>(omp_get_thread_num()) * padded(K);
#pragma omp for schedule(dynamic, 1)
    for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
      const int64_t lo = chunk * kTaskChunk, hi = std::min(c.n_tasks, lo + kTaskChunk);
      double marginal[kTaskChunk];
      for (int64_t i = lo; i < hi; ++i) {
        if constexpr (KS > 0) {
          multiply_labels_small<KS>(c, i, factors, row);
        } else {
          multiply_labels_blocked(c, i, factors, row);
        }
        double s = 0.0;
        if constexpr (KS > 0 && KS < kLanes) {
          for (int64_t y = 0; y < K; ++y) s += row[y];
        } else {
          s = lane_sum(row, K, [](const double* r, int64_t y) { return r[y]; });
        }
        const double inv = 1.0 / s;
        for (int64_t y = 0; y < K; ++y) row[y] *= inv;
        if constexpr (KS > 0) {
          std::copy(row, row + K, post + i * K);
        } else {
          stream_store(post + i * K, row, K);
        }
        marginal[i - lo] = s / k + kMarginalEps;
      }
      vlog(marginal, marginal, hi - lo);  // one SIMD log per task instead of a scalar call
      double ll = 0.0;
      for (int64_t i = 0; i < hi - lo; ++i) ll += marginal[i];
      partial[chunk] = ll;
    }
    store_fence();  // streaming stores are weakly ordered: visible to the M-step's threads after this
  }
  double total = 0.0;
  for (int64_t b = 0; b < n_chunks; ++b) total += partial[b];
  return total;
}

// e_step for this crowd's K: the fixed-K builds for 2..5 classes, else the general one.
double e_step_any(const Crowd& c, const double* factors, Tables& t, int n_threads) {
  switch (c.n_classes) {
    case 2: return e_step<2>(c, factors, t, n_threads);
    case 3: return e_step<3>(c, factors, t, n_threads);
    case 4: return e_step<4>(c, factors, t, n_threads);
    case 5: return e_step<5>(c, factors, t, n_threads);
    default: return e_step<0>(c, factors, t, n_threads);
  }
}

// crowd-kit's normalize (EM: counts + smoothing over their sum) and variational_normalize (VB: exp ψ(counts +
// prior) over exp ψ(their sum)), each as one pass that fills dst[slot(z)] for z < n and then divides by the
// norm in dst's order; a norm within 1e-8 of 0 gives zeros (numpy.isclose(norm, 0), as crowd-kit guards).
template <typename Slot>
void normalize_into(const double* x, int64_t n, bool variational, double prior, double* dst, Slot&& slot) {
  for (int64_t z = 0; z < n; ++z) dst[slot(z)] = x[z] + prior;
  double norm = 0.0;
  for (int64_t z = 0; z < n; ++z) norm += dst[z];
  if (variational) {
    norm = std::exp(digamma(norm));
    for (int64_t z = 0; z < n; ++z) dst[z] = std::exp(digamma(dst[z]));
  }
  const bool zero = std::fabs(norm) <= 1e-8;
  for (int64_t z = 0; z < n; ++z) dst[z] = zero ? 0.0 : dst[z] / norm;
}

// The M-step, one worker per iteration: the posterior that each of w's labels was spam (and that it was known),
// summed in w's label order, then normalised into spam_next[w] and the thetas row theta_row[w] (columns
// permuted by theta_col; see mace.hpp). crowd-kit 1.4.2 (mace.py, _e_step) computes, for a label z of task i
// with gold[y] = p(labels of i, y) and m = Σ_y gold[y]:
//   spammed = a · Σ_y gold[y] / p(z | y, w) / m,   known = gold[z] · b / (a + b) / m.
// p(z | y, w) is a for every y but z, so with q = gold[z] / m (the posterior of z) spammed = (1 − q) + q · a / (a
// + b) and known = q · b / (a + b): O(1) per label, the two ratios computed once per worker and class.
void m_step(const Crowd& c, const int64_t* theta_row, const int64_t* theta_col, const MaceOptions& opt, Tables& t,
            int n_threads) {
  const int64_t K = c.n_classes;
  const double* post = t.post.data();
  const double* factors = t.factors.data();
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    double* counts = t.scratch.data() + static_cast<int64_t>(omp_get_thread_num()) * 3 * K;
    double* spam_share = counts + K;      // a / (a + b) per class
    double* know_share = counts + 2 * K;  // b / (a + b)
    const double p_know = t.spam[2 * w + 1];
    const double* f = factors + 2 * w * K;
    for (int64_t z = 0; z < K; ++z) {
      counts[z] = 0.0;
      spam_share[z] = f[2 * z] / f[2 * z + 1];
      know_share[z] = p_know / f[2 * z + 1];
    }
    double spam_total = 0.0, know_total = 0.0;
    const int64_t end = c.worker_ptr[w + 1];
    for (int64_t u = c.worker_ptr[w]; u < end; ++u) {
      if (u + kPrefetchAhead < end)
        __builtin_prefetch(post + c.worker_task[u + kPrefetchAhead] * K + c.worker_label[u + kPrefetchAhead]);
      const int64_t z = c.worker_label[u];
      const double q = post[c.worker_task[u] * K + z];
      const double spammed = (1.0 - q) + q * spam_share[z];
      counts[z] += spammed;
      spam_total += spammed;
      know_total += q * know_share[z];
    }
    double* sp = t.spam_next.data() + 2 * w;
    if (opt.variational) {
      // a Beta(alpha, beta) prior: two different prior counts, so the pair is done by hand
      const double x0 = spam_total + opt.alpha, x1 = know_total + opt.beta;
      const double norm = std::exp(digamma(x0 + x1));
      const bool zero = std::fabs(norm) <= 1e-8;
      sp[0] = zero ? 0.0 : std::exp(digamma(x0)) / norm;
      sp[1] = zero ? 0.0 : std::exp(digamma(x1)) / norm;
    } else {
      const double pair[2] = {spam_total, know_total};
      normalize_into(pair, 2, false, opt.smoothing, sp, [](int64_t z) { return z; });
    }
    const double prior = opt.variational ? opt.strategy_prior : opt.smoothing;
    normalize_into(counts, K, opt.variational, prior, t.theta_next.data() + theta_row[w] * K,
                   [&](int64_t z) { return theta_col[z]; });
  }
}

// One restart from (t.spam, t.theta): an E-step, then n_iter rounds of M-step and E-step. Returns the last
// E-step's log marginal likelihood; the parameters it was computed under are left in (t.spam, t.theta).
double run_start(const Crowd& c, const int64_t* theta_row, const int64_t* theta_col, const MaceOptions& opt,
                 Tables& t, int n_threads) {
  const auto e_step_now = [&] {
    fill_factors(c.n_workers, c.n_classes, t.spam.data(), t.theta.data(), t.factors.data(), n_threads);
    return e_step_any(c, t.factors.data(), t, n_threads);
  };
  double ll = e_step_now();
  for (int it = 0; it < opt.n_iter; ++it) {
    m_step(c, theta_row, theta_col, opt, t, n_threads);
    std::swap(t.spam, t.spam_next);
    std::swap(t.theta, t.theta_next);
    ll = e_step_now();
  }
  return ll;
}

void check_permutation(const int64_t* p, int64_t n, const char* name) {
  std::vector<uint8_t> seen(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n; ++i) {
    LUAB_CHECK(p[i] >= 0 && p[i] < n && !seen[p[i]], name, " must be a permutation of 0..", n - 1, ", got ", p[i],
               " at position ", i);
    seen[p[i]] = 1;
  }
}

}  // namespace

MaceResult mace(const Crowd& c, const double* spamming0, const double* thetas0, int64_t n_starts,
                const int64_t* theta_row, const int64_t* theta_col, const MaceOptions& opt) {
  LUAB_CHECK(n_starts >= 1, "n_starts must be >= 1, got ", n_starts);
  LUAB_CHECK(opt.n_iter >= 0, "n_iter must be >= 0, got ", opt.n_iter);
  check_permutation(theta_row, c.n_workers, "theta_row");
  check_permutation(theta_col, c.n_classes, "theta_col");
  const int n_threads = resolve_threads(opt.n_threads, c.n_labels * c.n_classes);
  const int64_t W = c.n_workers, K = c.n_classes;
  const int64_t TK = checked_size("n_tasks * n_classes", {c.n_tasks, K});
  const int64_t WK = checked_size("n_workers * n_classes", {W, K});

  Tables t;
  t.post = Buffer<double>(TK, Uninitialized{});
  t.factors = Buffer<double>(2 * WK, Uninitialized{});
  t.spam = Buffer<double>(2 * W, Uninitialized{});
  t.spam_next = Buffer<double>(2 * W, Uninitialized{});
  t.theta = Buffer<double>(WK, Uninitialized{});
  t.theta_next = Buffer<double>(WK, Uninitialized{});
  t.rows = Buffer<double>(checked_size("threads * n_classes", {n_threads, padded(K)}), Uninitialized{});
  t.scratch = Buffer<double>(checked_size("threads * 3 * n_classes", {n_threads, 3, K}), Uninitialized{});
  t.ll_partial.assign((c.n_tasks + kTaskChunk - 1) / kTaskChunk, 0.0);

  MaceResult r;
  r.spamming = Buffer<double>(2 * W, Uninitialized{});
  r.thetas = Buffer<double>(WK, Uninitialized{});
  double best_ll = -std::numeric_limits<double>::infinity();
  for (int64_t s = 0; s < n_starts; ++s) {
    std::memcpy(t.spam.data(), spamming0 + s * 2 * W, sizeof(double) * 2 * W);
    std::memcpy(t.theta.data(), thetas0 + s * WK, sizeof(double) * WK);
    const double ll = run_start(c, theta_row, theta_col, opt, t, n_threads);
    r.log_likelihood.push_back(ll);
    if (ll > best_ll) {  // strictly: of equal starts the first wins, and a NaN never does (as in crowd-kit)
      best_ll = ll;
      r.best = s;
      std::memcpy(r.spamming.data(), t.spam.data(), sizeof(double) * 2 * W);
      std::memcpy(r.thetas.data(), t.theta.data(), sizeof(double) * WK);
    }
  }
  LUAB_CHECK(r.best >= 0, "no start reached a finite log marginal likelihood (every one gave ",
             r.log_likelihood.front(), "): the parameters or the priors make the model degenerate");

  // the posteriors under the kept parameters (crowd-kit's last E-step and decode_distribution)
  std::memcpy(t.spam.data(), r.spamming.data(), sizeof(double) * 2 * W);
  std::memcpy(t.theta.data(), r.thetas.data(), sizeof(double) * WK);
  fill_factors(W, K, t.spam.data(), t.theta.data(), t.factors.data(), n_threads);
  e_step_any(c, t.factors.data(), t, n_threads);
  r.probas = std::move(t.post);
  return r;
}

}  // namespace luab::aggregate
