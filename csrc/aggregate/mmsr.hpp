// M-MSR (Ma & Olshevsky, "Adversarial crowdsourcing through robust rank-one matrix completion", NeurIPS 2020):
// worker skills from a robust rank-one fit u vᵀ of the workers' covariation matrix, as crowd-kit 1.4.2 (m_msr.py)
// computes them, and the skill-weighted vote its predict() returns. The covariation matrix is kept sparse: only
// pairs of workers with a task in common have an entry; every other pair (and the diagonal) holds −1/(K−1).
#pragma once

#include <cstdint>
#include <vector>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

// The observed entries of the workers × workers covariation matrix, one CSR row per worker, partners ascending.
// A worker's label on a task is its last one in input order (crowd-kit's observation matrix keeps the last).
struct WorkerPairs {
  int64_t n_workers = 0;
  std::vector<int64_t> ptr;       // [W + 1]
  std::vector<int32_t> partner;   // [nnz] the other worker, ascending within a row
  std::vector<int64_t> common;    // [nnz] tasks both labelled
  std::vector<double> cov;        // [nnz] K/(K−1) · agreement − 1/(K−1), rounded step by step as numpy does
  double unobserved_cov = 0.0;    // the value of every other entry, the diagonal included: −1/(K−1)
  int64_t min_partners = 0;       // the fewest partners any worker has (crowd-kit's _sparsity)
};

// c.n_classes >= 2 (the number of distinct labels).
WorkerPairs build_worker_pairs(const Crowd& c, int n_threads);

// numpy's C.sum(axis=1) of the full W × W matrix, bit for bit (its pairwise summation over each dense row):
// crowd-kit keeps only the workers whose sum is nonzero for the sign step.
void covariation_row_sums(const WorkerPairs& p, double* out, int n_threads);

struct MMSRResult {
  std::vector<double> u, v;          // [W] the rank-one factors after the last iteration
  std::vector<double> loss_history;  // ‖u vᵀ − u_prev v_prevᵀ‖_F per iteration
};

// crowd-kit's _m_msr loop from u0, v0 [W]: each v_j, then each u_i, becomes the trimmed mean of |C_ij| / u_i
// (resp. / v_j) over the worker's partners, dropping floor(min_partners / 2) − 1 values on each side of its
// current value; stops after n_iter iterations or when the loss falls below tol. n_tasks: crowd-kit's floor for
// a lone zero (1/sqrt(n_tasks)).
MMSRResult mmsr(const WorkerPairs& p, const double* u0, const double* v0, int n_iter, double tol, int64_t n_tasks,
                int n_threads);

// crowd-kit's MajorityVote(skills=...).probas_ as a dense [T, K] table: per task, the skills of the workers who
// gave each label summed as pandas sums them (in_runs: the input rows come sorted by (task, label); see
// pandas_group_sum in pandas_sums.hpp), each row then divided by its total (so negative or zero totals give what pandas
// gives: negative shares, inf, NaN).
Buffer<double> weighted_vote_shares(const Crowd& c, const double* skills, bool in_runs, int n_threads);

}  // namespace luab::aggregate
