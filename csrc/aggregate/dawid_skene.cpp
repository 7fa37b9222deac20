#include "dawid_skene.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "../common/vmath.hpp"
#include "em_kernels.hpp"

namespace luab::aggregate {
namespace {

// crowd-kit's _EPS: error cells and class priors are clipped to at least this before taking logs.
constexpr double kClip = 1e-10;

// Full confusion M-step: theta[w][z][y] = max(N + alpha, eps) / Σ_z (...), with crowd-kit's rule that
// only labels a worker actually gave (observed z) are clipped; with alpha = 0 unobserved rows stay 0,
// exactly as crowd-kit, which has no row for them at all.
// worker_obj[w] = Σ_{z,y} (N + alpha)[w][z][y] · log theta[w][z][y]: the worker's share of the expected
// complete-data log-likelihood (plus its log prior), from the counts, so the ELBO needs no pass over labels.
void full_m_step(const Crowd& c, const double* counts, const double* alpha, bool per_worker, double* theta,
                 double* log_theta, double* worker_obj, int nt) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    const double* a = alpha == nullptr ? nullptr : alpha + (per_worker ? w * KK : 0);
    const uint8_t* obs = c.observed.data() + w * K;
    const double* cw = counts + w * KK;
    double* tw = theta + w * KK;
    double* lw = log_theta + w * KK;
    std::vector<double> denom(K, 0.0);
    for (int64_t z = 0; z < K; ++z) {
      const double* cz = cw + z * K;
      double* tz = tw + z * K;
      for (int64_t y = 0; y < K; ++y) {
        double v = cz[y] + (a != nullptr ? a[y * K + z] : 0.0);
        if (obs[z]) v = std::max(v, kClip);
        tz[y] = v;
        denom[y] += v;
      }
    }
    for (int64_t y = 0; y < K; ++y) denom[y] = denom[y] > 0.0 ? 1.0 / denom[y] : 0.0;
    for (int64_t z = 0; z < K; ++z) {
      double* tz = tw + z * K;
      // a worker with no labels and no prior: uniform (never read by the E-step)
      for (int64_t y = 0; y < K; ++y) tz[y] = denom[y] > 0.0 ? tz[y] * denom[y] : 1.0 / static_cast<double>(K);
    }
    // log of every cell at once (vectorised); unobserved rows may be 0 -> -inf, never read
    for (int64_t z = 0; z < K; ++z) {
      if (obs[z] || a != nullptr) {
        vlog(tw + z * K, lw + z * K, K);
      } else {
        for (int64_t y = 0; y < K; ++y) lw[z * K + y] = tw[z * K + y] > 0.0 ? std::log(tw[z * K + y]) : -HUGE_VAL;
      }
    }
    double obj = 0.0;
    for (int64_t z = 0; z < K; ++z) {
      if (!obs[z]) continue;  // no labels z from w: counts are 0 (and the log may be -inf)
      const double* cz = cw + z * K;
      const double* lz = lw + z * K;
      for (int64_t y = 0; y < K; ++y) obj += cz[y] * lz[y];
    }
    if (a != nullptr)
      for (int64_t y = 0; y < K; ++y)
        for (int64_t z = 0; z < K; ++z)
          if (a[y * K + z] > 0.0) obj += a[y * K + z] * lw[z * K + y];
    worker_obj[w] = obj;
  }
}

// One-coin M-step (crowd-kit's OneCoinDawidSkene): skill = expected accuracy over the worker's labels,
// p(z | y) = skill if z == y else (1 - skill) / (K - 1), clipped to [eps, 1 - eps].
void one_coin_m_step(const Crowd& c, const double* post, const double* alpha, double* skills, double* theta,
                     double* log_theta, double* worker_obj, int nt) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
  const double a_right = alpha != nullptr ? alpha[0] : 0.0;
  const double a_wrong = alpha != nullptr ? alpha[1] : 0.0;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    double hit = 0.0;
    for (int64_t j = c.worker_ptr[w]; j < c.worker_ptr[w + 1]; ++j)
      hit += post[c.worker_task[j] * K + c.worker_label[j]];
    const double n = static_cast<double>(c.worker_ptr[w + 1] - c.worker_ptr[w]);
    const double denom = n + a_right + a_wrong;
    // crowd-kit takes the plain mean; with pseudo-counts it is the posterior mean of a Beta prior
    const double s = denom > 0.0 ? (hit + a_right) / denom : 1.0 / static_cast<double>(K);
    skills[w] = s;
    const double right = std::clamp(s, kClip, 1.0 - kClip);
    const double wrong = K > 1 ? std::clamp((1.0 - s) / static_cast<double>(K - 1), kClip, 1.0 - kClip) : 1.0;
    double* tw = theta + w * KK;
    double* lw = log_theta + w * KK;
    const double p_diag = K > 1 ? right : 1.0;
    const double log_diag = std::log(p_diag), log_wrong = std::log(wrong);
    for (int64_t z = 0; z < K; ++z)
      for (int64_t y = 0; y < K; ++y) {
        tw[z * K + y] = (z == y) ? p_diag : wrong;
        lw[z * K + y] = (z == y) ? log_diag : log_wrong;
      }
    // Σ over labels of Σ_y p(y) log theta = hit · log p_diag + (n − hit) · log wrong, as Σ_y p(y) = 1
    double obj = hit * log_diag + (n - hit) * log_wrong;
    if (alpha != nullptr) obj += a_right * std::log(right) + a_wrong * std::log(1.0 - right);
    worker_obj[w] = obj;
  }
}

// crowd-kit's _evidence_lower_bound (before the division by the number of labels), plus the log of
// the Dirichlet/Beta prior so that the objective is the one MAP-EM actually increases. Rearranged so no
// pass over the labels is needed: Σ_labels Σ_y p_i(y) log theta[w][z][y] is Σ_w worker_obj[w] (from the
// counts), Σ_labels Σ_y p_i(y) log prior(y) is Σ_y L_y log prior(y) with L_y = Σ_i n_i p_i(y), and the
// entropy comes from the E-step.
double objective(const Crowd& c, const double* entropy, const double* class_prior, const double* label_totals,
                 const double* worker_obj, int nt) {
  const int64_t K = c.n_classes;
  double total = blocked_task_sum(c.n_tasks, nt, [&](int64_t i) { return entropy[i]; });
  for (int64_t w = 0; w < c.n_workers; ++w) total += worker_obj[w];
  for (int64_t y = 0; y < K; ++y) total += label_totals[y] * std::log(std::max(class_prior[y], kClip));
  return total;
}

}  // namespace

DSResult dawid_skene(const Crowd& c, const double* init_post, const double* alpha, bool alpha_per_worker,
                     const double* task_prior, const DSOptions& opt) {
  const int nt = resolve_threads(opt.n_threads);
  const int64_t K = c.n_classes;
  const int64_t W = c.n_workers;
  DSResult r;
  r.post = Buffer<double>(init_post, c.n_tasks * K);
  r.class_prior.assign(K, 0.0);
  r.theta = Buffer<double>(W * K * K, 0.0);
  r.skills.assign(opt.one_coin ? W : 0, 0.0);
  Buffer<double> log_theta(W * K * K, 0.0);
  Buffer<double> counts(opt.one_coin ? 0 : W * K * K, 0.0);
  std::vector<double> log_prior(K, 0.0);
  std::vector<double> entropy(c.n_tasks, 0.0);
  std::vector<double> worker_obj(W, 0.0);
  std::vector<double> label_totals(K, 0.0);

  auto m_step = [&]() {
    if (opt.one_coin) {
      one_coin_m_step(c, r.post.data(), alpha, r.skills.data(), r.theta.data(), log_theta.data(), worker_obj.data(),
                      nt);
    } else {
      accumulate_counts(c, r.post.data(), /*hard=*/false, counts.data(), nt);
      full_m_step(c, counts.data(), alpha, alpha_per_worker, r.theta.data(), log_theta.data(), worker_obj.data(),
                  nt);
    }
  };

  // crowd-kit order: prior and confusions from the initial posteriors, then (E, prior, M, loss)*
  mean_labelled_posterior(c, r.post.data(), r.class_prior.data(), nt);
  m_step();
  double loss = -std::numeric_limits<double>::infinity();
  const double n_labels = static_cast<double>(std::max<int64_t>(c.n_labels, 1));
  for (int it = 0; it < opt.n_iter; ++it) {
    for (int64_t y = 0; y < K; ++y) log_prior[y] = std::log(std::max(r.class_prior[y], kClip));
    e_step(c, log_prior.data(), log_theta.data(), task_prior, 1e-8, r.post.data(), nt, entropy.data(), kClip);
    mean_labelled_posterior(c, r.post.data(), r.class_prior.data(), nt, label_totals.data());
    m_step();
    const double new_loss =
        objective(c, entropy.data(), r.class_prior.data(), label_totals.data(), worker_obj.data(), nt) / n_labels;
    r.loss_history.push_back(new_loss);
    r.n_iter_run = it + 1;
    if (new_loss - loss < opt.tol) break;
    loss = new_loss;
  }
  return r;
}

}  // namespace luab::aggregate
