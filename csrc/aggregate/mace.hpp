// MACE, Multi-Annotator Competence Estimation (Hovy, Berg-Kirkpatrick, Vaswani, Hovy, NAACL 2013), fitted the
// way crowd-kit 1.4.2 fits it (crowdkit/aggregation/classification/mace.py): random restarts, each an E-step
// and n_iter (M-step, E-step) rounds, the start of the best log marginal likelihood kept, one final E-step.
//
// The model: a worker w spams with probability spamming[w][0] (then answers z with probability theta[w][z]) and
// knows the true class with probability spamming[w][1] (then answers it). Layouts, row-major, float64:
//   spamming [W, 2]   (p(spam), p(know)) per worker
//   thetas   [W, K]   the spam answer distribution, in crowd-kit's array layout (see theta_row below)
//   probas   [T, K]   posterior over the true class of each task
#pragma once

#include <cstdint>
#include <vector>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

struct MaceOptions {
  int n_iter = 50;
  // true: crowd-kit's method="vb" (variational M-step: exp ψ under a Beta(alpha, beta) prior on spamming and a
  // symmetric Dirichlet(strategy_prior) prior on thetas); false: the smoothed EM M-step
  bool variational = true;
  double smoothing = 0.0;        // EM: added to every expected count before normalising (crowd-kit: 0.01 / K)
  double alpha = 0.5;            // VB: prior count of spamming
  double beta = 0.5;             // VB: prior count of knowing
  double strategy_prior = 10.0;  // VB: prior count of each spam answer
  int n_threads = 0;
};

struct MaceResult {
  Buffer<double> spamming;              // [W, 2] of the best start, after its last M-step
  Buffer<double> thetas;                // [W, K] likewise
  Buffer<double> probas;                // [T, K] the final E-step's posteriors under those
  std::vector<double> log_likelihood;   // [n_starts] each start's final log marginal likelihood
  int64_t best = -1;                    // the first start of the largest one
};

// spamming0 [n_starts, W, 2], thetas0 [n_starts, W, K]: the random starts (drawn by the caller, as crowd-kit
// draws them). theta_row [W], theta_col [K]: permutations. crowd-kit's M-step builds the new thetas from a
// pandas groupby, whose rows and columns come out in *sorted* worker and label order, while its E-step indexes
// them by order of first appearance; so worker w's new spam distribution over label z lands in
// thetas[theta_row[w]][theta_col[z]] (the sorted rank of w and of z), and that is the row the E-step then reads
// for whichever worker has that index. Identity permutations give the model as published.
MaceResult mace(const Crowd& c, const double* spamming0, const double* thetas0, int64_t n_starts,
                const int64_t* theta_row, const int64_t* theta_col, const MaceOptions& opt);

// ψ(x) as scipy.special.digamma gives it (−inf at +0, +inf at −0, NaN at negative integers), to ~1e-15.
double digamma(double x);

}  // namespace luab::aggregate
