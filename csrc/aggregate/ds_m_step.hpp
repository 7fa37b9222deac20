// The two M-steps of soft-EM Dawid–Skene (dawid_skene.cpp): full confusion tables, or one accuracy per worker.
// Each also returns worker_obj[w], the worker's share of the objective (see dawid_skene.cpp's objective()).
#pragma once

#include <cstdint>

#include "compact_posteriors.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

// crowd-kit's _EPS: error cells and class priors are clipped to at least this before taking logs.
constexpr double kClip = 1e-10;

// The most classes of the full model: K * K cell ids must fit in int32.
constexpr int64_t kMaxConfusionClasses = 46340;

// Full confusion M-step, one worker per thread with its K×K block in a thread-local scratch (so the only global
// table is log_theta): counts N[z][y] = Σ over w's labels (i, z) of post_i(y) (from the compact rows where the
// task has them: compact_posteriors.hpp); then theta[z][y] = max(N + alpha, eps) / Σ_z (...), crowd-kit's rule
// that only labels the worker actually gave (observed z) are clipped — with alpha = 0 unobserved rows stay 0, as
// crowd-kit has no row for them. log_theta [W, K, K] takes log theta.
// worker_obj[w] = Σ_{z,y} (N + alpha)[z][y] · log theta[z][y]: the worker's share of the expected complete-data
// log-likelihood plus its log prior, so the ELBO needs no second pass over the labels.
// alpha [K, K] (per_worker false) or [W, K, K], indexed [y][z], or nullptr.
template <typename TP>
void confusion_m_step(const Crowd& c, const TP* post, const CompactPosteriors<TP>& compact, const double* alpha,
                      bool per_worker, TP* log_theta, double* worker_obj, int nt);

// One-coin M-step (crowd-kit's OneCoinDawidSkene): skill = expected accuracy over the worker's labels,
// p(z | y) = skill if z == y else (1 - skill) / (K - 1), both clipped to [eps, 1 - eps].
// coin[w] = (log right, log wrong): the E-step needs nothing else, so no K×K table is built.
// alpha [2] or nullptr: the pseudo-counts of a right and of a wrong answer (a Beta prior on the skill).
template <typename TP>
void one_coin_m_step(const Crowd& c, const TP* post, const double* alpha, double* skills, double* coin,
                     double* worker_obj, int nt);

// Expected counts [W, K(z), K(y)]: counts[w][z][y] = Σ over w's labels (t, z) of post_t(y), one worker per thread in
// label order (crowd-kit's first M-step before its initial_error is applied: luab_fast.crowdkit.DawidSkene).
void soft_confusion_counts(const Crowd& c, const double* post, double* counts, int nt);

}  // namespace luab::aggregate
