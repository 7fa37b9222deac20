// Soft-EM Dawid–Skene (full confusion matrices, or one accuracy per worker) with crowd-kit 1.4.2's
// exact update order and stopping rule, plus Dirichlet pseudo-counts on the confusion rows.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

struct DSOptions {
  int n_iter = 100;
  double tol = 1e-5;
  bool one_coin = false;
  // float32 posteriors and confusion tables (arithmetic stays double): half the memory and half the
  // traffic of the random row reads that bound EM; posteriors then agree with float64 to ~1e-6.
  bool single_precision = false;
  int n_threads = 0;
};

struct DSResult {
  Buffer<double> post;              // [T, K] (empty in single precision: post_f32)
  Buffer<float> post_f32;
  std::vector<double> class_prior;  // [K]
  Buffer<double> theta;             // [W, K(z), K(y)]: p(z | y, w); empty for one-coin
  Buffer<float> theta_f32;
  std::vector<double> skills;       // [W], one-coin only: expected accuracy
  std::vector<double> loss_history;
  int n_iter_run = 0;
};

// Where a fit starts, and what it holds fixed; every member optional (nullptr).
struct DSStart {
  // [T, K] the starting posteriors (e.g. a previous fit's, to warm-start); nullptr: majority vote
  const double* post = nullptr;
  // [W, K(z), K(y)] p(z | y, w) to use instead of the first M-step (crowd-kit's initial_error); full model only
  const double* theta = nullptr;
  // [T] class index, or -1: a task's posterior is the one-hot row of its gold class, at the start and after
  // every E-step (crowd-kit's true_labels); full model only
  const int64_t* gold = nullptr;
};

// alpha: Dirichlet pseudo-counts indexed [y][z] (true class row), shape [K, K] (alpha_per_worker
// false) or [W, K, K]; nullptr means none (crowd-kit). One-coin reads alpha[0] and alpha[1] as the
// pseudo-counts of a correct and of a wrong answer.
// task_prior [T, K] or nullptr: a per-task prior (e.g. a learner's probabilities), multiplied in.
DSResult dawid_skene(const Crowd& c, const DSStart& start, const double* alpha, bool alpha_per_worker,
                     const double* task_prior, const DSOptions& opt);

}  // namespace luab::aggregate
