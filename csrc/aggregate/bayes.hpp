// The seed's BayesAggregator + EMOptimizer (efficient-annotation-cookbook, CVPR 2021): hard-EM over
// per-worker Dirichlet confusion rows, a uniform class prior, an optional per-task learner prior.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

struct BayesOptions {
  int max_iter = 10;
  bool hard_criterion = false;      // 'hard': stop when no argmax changes; 'soft': |Δ z-likelihood| < eps
  double likelihood_epsilon = 1e-3;
  int n_threads = 0;
};

struct BayesResult {
  Buffer<double> post;                // [T, K] final posterior (after the last M-step)
  Buffer<double> counts;              // [W, K(z), K(y)] hard counts N_w (E-step layout)
  Buffer<double> theta;               // [W, K(z), K(y)] p(z | y, w) = (alpha + N)[y, z] / Σ_z
  std::vector<double> z_likelihood;   // mean p(z | argmax y, w) after each M-step
  int n_iter_run = 0;
  bool converged = false;
  int n_decreases = 0;                // the seed only warns when the z-likelihood goes down
};

// alpha [K, K] or [W, K, K], indexed [y][z]. task_prior [T, K] or nullptr (log(p + 1e-8) is added).
// init_post [T, K] or nullptr: nullptr starts from N_w = 0 (the seed: every online step restarts
// from the prior); otherwise N_w starts as the hard counts of init_post (a warm start).
BayesResult bayes_aggregate(const Crowd& c, const double* alpha, bool alpha_per_worker, const double* task_prior,
                            const double* init_post, const BayesOptions& opt);

}  // namespace luab::aggregate
