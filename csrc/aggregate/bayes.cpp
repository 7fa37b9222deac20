#include "bayes.hpp"

#include <cmath>

#include "../common/check.hpp"
#include "../common/vmath.hpp"
#include "e_step.hpp"
#include "em_kernels.hpp"

namespace luab::aggregate {
namespace {

// The seed adds this inside every log (prior, emission and learner probabilities).
constexpr double kSeedEps = 1e-8;

// theta[w][z][y] = (alpha[y][z] + N[w][z][y]) / Σ_z' (alpha[y][z'] + N[w][z'][y]) — the posterior mean
// of each confusion row under its Dirichlet prior (the seed's DirichletDist.p_z_given_y).
void dirichlet_rows(const Crowd& c, const double* counts, const double* alpha, bool per_worker, double* theta,
                    double* log_theta, int nt) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    const double* a = alpha + (per_worker ? w * KK : 0);
    const double* cw = counts + w * KK;
    double* tw = theta + w * KK;
    double* lw = log_theta + w * KK;
    for (int64_t y = 0; y < K; ++y) {
      double denom = 0.0;
      for (int64_t z = 0; z < K; ++z) denom += a[y * K + z] + cw[z * K + y];
      for (int64_t z = 0; z < K; ++z) {
        const double p = denom > 0.0 ? (a[y * K + z] + cw[z * K + y]) / denom : 1.0 / static_cast<double>(K);
        tw[z * K + y] = p;
        lw[z * K + y] = p + kSeedEps;
      }
    }
    vlog(lw, lw, KK);  // log(p + 1e-8), as the seed
  }
}

}  // namespace

BayesResult bayes_aggregate(const Crowd& c, const double* alpha, bool alpha_per_worker, const double* task_prior,
                            const double* init_post, const BayesOptions& opt) {
  // the tables' sizes, checked before anything is allocated (or indexed) with them
  checked_size("n_tasks * n_classes", {c.n_tasks, c.n_classes});
  checked_size("n_workers * n_classes * n_classes", {c.n_workers, c.n_classes, c.n_classes});
  const int nt = resolve_threads(opt.n_threads, c.n_labels * c.n_classes);
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
  const int64_t W = c.n_workers;
  BayesResult r;
  // every row is written before it is read: labelled rows by each E-step, the rest by the final pass (a fill of
  // T×K doubles costs as much as an E-step over the labelled tasks at ImageNet-100 scale)
  r.post = Buffer<double>(c.n_tasks * K, Uninitialized{});
  r.counts = Buffer<double>(W * KK, 0.0);
  r.theta = Buffer<double>(W * KK, 0.0);
  Buffer<double> log_theta(W * KK, 0.0);
  // uniform class prior, exactly as the seed: log(1/K + 1e-8)
  std::vector<double> log_prior(K, std::log(1.0 / static_cast<double>(K) + kSeedEps));
  std::vector<int32_t> yhat(c.n_tasks), prev_yhat(c.n_tasks);
  // log(learner prob + 1e-8) once per fit, not once per E-step, and only for labelled tasks: the E-steps read
  // no other row (unlabelled tasks get prior_only_rows)
  Buffer<double> log_tp(static_cast<size_t>(task_prior != nullptr ? c.n_tasks * K : 0), Uninitialized{});
  if (task_prior != nullptr) {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1024)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (c.task_ptr[i] == c.task_ptr[i + 1]) continue;
      double* row = log_tp.data() + i * K;
      for (int64_t y = 0; y < K; ++y) row[y] = task_prior[i * K + y] + kSeedEps;
      vlog(row, row, K);
    }
  }
  const double* ltp = task_prior != nullptr ? log_tp.data() : nullptr;

  if (init_post != nullptr) {
    argmax_labelled_rows(c, init_post, yhat.data(), nt);
    accumulate_hard_counts(c, yhat.data(), r.counts.data(), nt);
  }
  dirichlet_rows(c, r.counts.data(), alpha, alpha_per_worker, r.theta.data(), log_theta.data(), nt);

  auto z_likelihood = [&]() {
    const double s = blocked_task_sum(c.n_tasks, nt, [&](int64_t i) {
      double acc = 0.0;
      for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j)
        acc += r.theta[c.task_worker[j] * KK + static_cast<int64_t>(c.task_label[j]) * K + yhat[i]];
      return acc;
    });
    return c.n_labels > 0 ? s / static_cast<double>(c.n_labels) : 0.0;
  };

  bool have_prev = false;
  double prev_lik = 0.0;
  for (int it = 0; it < opt.max_iter; ++it) {
    // E, labelled tasks only: an unlabelled task's posterior is its prior, read by nothing until the final E-step
    e_step_labelled(c, log_prior.data(), log_theta.data(), ltp, r.post.data(), nt);
    argmax_labelled_rows(c, r.post.data(), yhat.data(), nt);
    accumulate_hard_counts(c, yhat.data(), r.counts.data(), nt);                               // M (hard)
    dirichlet_rows(c, r.counts.data(), alpha, alpha_per_worker, r.theta.data(), log_theta.data(), nt);
    const double lik = z_likelihood();
    r.z_likelihood.push_back(lik);
    r.n_iter_run = it + 1;
    if (have_prev) {
      if (lik < prev_lik) ++r.n_decreases;
      const bool stop = opt.hard_criterion ? (yhat == prev_yhat) : std::fabs(prev_lik - lik) < opt.likelihood_epsilon;
      if (stop) {
        r.converged = true;
        break;
      }
    }
    have_prev = true;
    prev_lik = lik;
    prev_yhat.swap(yhat);
  }
  // the seed re-infers the posterior once more with the final confusion matrices
  e_step_labelled(c, log_prior.data(), log_theta.data(), ltp, r.post.data(), nt);
  // unlabelled tasks: (uniform prior × learner prior), normalised; no exp or log over the (often millions of) rows
  const std::vector<double> uniform(K, 1.0 / static_cast<double>(K) + kSeedEps);
  prior_only_rows(c, uniform.data(), task_prior, kSeedEps, r.post.data(), nt);
  return r;
}

}  // namespace luab::aggregate
