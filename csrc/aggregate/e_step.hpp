// The E-step of every EM estimator, one function per mode, in log space, OpenMP-parallel:
//   post_i(y) ∝ exp(log_class_prior[y] + Σ_{(w,z) ∈ labels(i)} log p(z | y, w) [+ log task prior_i(y)]).
// Layouts as in em_kernels.hpp. TP: storage type of post (and of log_theta), double or float (half the memory
// traffic of the random row reads); all arithmetic is in double.
#pragma once

#include <cstdint>

#include "compact_posteriors.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

// What a soft E-step reports besides the posteriors, all computed from the rows it writes, so that nothing
// reads the T×K table back:
//   entropy [T]: -Σ_y q log q with q = max(post, entropy_clip) (crowd-kit's ELBO term), from the log-posteriors
//     the E-step already has (no extra log per cell);
//   labelled_mean [K]: what mean_labelled_posterior gives for the stored rows (float rows summed as floats);
//   label_totals [K]: Σ_i n_i post_i (each task weighted by its number of labels).
struct SoftEStepOut {
  double* entropy;
  double entropy_clip;
  double* labelled_mean;
  double* label_totals;
};

// Soft EM with full confusion tables (Dawid–Skene): log p(z | y, w) = log_theta[w][z][y]. Every row is written;
// task_prior [T, K] or nullptr is added as log(task_prior + task_prior_eps). Each row's classes with p ≥ tau
// also go to `compact` for the soft M-step, which reads those, so the rows of post are written with
// non-temporal stores (they are not read again in this iteration). A task without labels gets the
// (class prior × task prior), normalised. gold [T] or nullptr: a task with gold[i] >= 0 gets the one-hot row of that
// class instead (crowd-kit's true_labels), before its sums and entropy are taken.
template <typename TP>
void e_step_confusion(const Crowd& c, const double* log_class_prior, const TP* log_theta, const double* task_prior,
                      double task_prior_eps, const int64_t* gold, TP* post, CompactPosteriors<TP>& compact,
                      const SoftEStepOut& out, int n_threads);

// Soft EM with one-coin workers: log p(z | y, w) = coin[w][0] if y == z else coin[w][1] (coin [W, 2]), so a
// label costs O(1) plus one O(K) add instead of a random K-row read. Otherwise as e_step_confusion, without
// compact rows.
template <typename TP>
void e_step_one_coin(const Crowd& c, const double* log_class_prior, const double* coin, const double* task_prior,
                     double task_prior_eps, TP* post, const SoftEStepOut& out, int n_threads);

// Hard EM (bayes): the rows of labelled tasks only (the others depend only on the constant priors and nothing
// in the loop reads them: prior_only_rows fills them once at the end). log_task_prior [T, K] or nullptr:
// log(task_prior + eps), computed once per fit by the caller (constant across iterations).
void e_step_labelled(const Crowd& c, const double* log_class_prior, const double* log_theta,
                     const double* log_task_prior, double* post, int n_threads);

// Rows of tasks without labels: post_i ∝ class prior × (task_prior_i + eps), normalised directly, no exp or log
// (with no task prior: the class prior). Within rounding of what the E-steps give them.
template <typename TP>
void prior_only_rows(const Crowd& c, const double* class_prior, const double* task_prior, double task_prior_eps,
                     TP* post, int n_threads);

}  // namespace luab::aggregate
