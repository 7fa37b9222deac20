// GLAD (Whitehill, Ruvolo, Wu, Bergsma, Movellan, NeurIPS 2009) as crowd-kit 1.4.2 fits it
// (crowd-kit 1.4.2, aggregation/classification/glad.py): worker abilities alpha_w, task log inverse difficulties
// beta_t, and a worker answers task t correctly with probability s = sigmoid(alpha_w * exp(beta_t)), otherwise
// uniformly one of the K - 1 other classes. EM: the E-step gives each task's posterior over the K classes; the
// M-step maximises crowd-kit's Q over (alpha, beta) with a port of the optimiser crowd-kit calls (scipy's
// minimize(method="CG"): Polak-Ribiere+ conjugate gradient, MINPACK's line search, scipy's fallback search),
// with the same iteration cap and gradient tolerance. Every sum runs over the CSR crowd in a fixed order (one
// task or one worker per iteration), so results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

// The model besides the crowd. The crowd's classes are the model's K classes (crowd-kit's "variables", the
// index of the label priors) plus one more, K: a label outside them, which agrees with no class.
struct GladModel {
  int64_t n_classes = 0;         // K; the crowd then has K + 1 classes
  const double* label_prior;     // [K] p(z = c), as given (crowd-kit does not normalise it)
  const double* alpha_mean;      // [W] mean of the N(., 1) prior on each alpha
  const double* beta_mean;       // [T] mean of the N(., 1) prior on each beta
  const double* alpha_init;      // [W] or nullptr: crowd-kit's start, 1.0
  const double* beta_init;       // [T] or nullptr: 1.0
};

struct GladOptions {
  int n_iter = 100;           // EM iterations at most
  double tol = 1e-5;          // stop when Q / (n_labels * K) rises by less than this
  int m_step_max_iter = 25;   // conjugate-gradient iterations per M-step
  double m_step_tol = 1e-2;   // ... until max |dQ/d(alpha, beta)| <= this
  int n_threads = 0;
};

struct GladResult {
  Buffer<double> post;               // [T, K] the last E-step's posteriors (crowd-kit's probas_: before the last M-step)
  std::vector<double> alphas;        // [W]
  std::vector<double> betas;         // [T]
  std::vector<double> loss_history;  // Q / (n_labels * K) after each M-step
  int n_iter_run = 0;
  int64_t n_evaluations = 0;         // of Q and its gradient, all M-steps together (scipy's nfev)
};

// Called at the start of EM iteration `iteration` with the Q the previous one ended on (crowd-kit's progress
// bar text; the first is the unnormalised Q of the start). Runs outside any parallel region, so it may throw.
using GladProgress = std::function<void(int iteration, double q)>;

GladResult glad(const Crowd& c, const GladModel& m, const GladOptions& opt, const GladProgress& progress);

}  // namespace luab::aggregate
