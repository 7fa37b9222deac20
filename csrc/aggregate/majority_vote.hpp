// (Weighted) majority vote: the normalised vote share of each class per task.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/buffer.hpp"
#include "compact_posteriors.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

// weights [W] or nullptr (every vote counts 1). A task with no votes, or whose votes weigh 0 in
// total, gets the uniform distribution (the prior of an uninformed vote).
Buffer<double> majority_vote(const Crowd& c, const double* weights, int n_threads);

// The same into a given [T, K] table of float or double (n_threads already resolved). compact, or nullptr:
// also record each row's nonzero shares (at most one per label, so rarely more than kCap), so that the first
// soft M-step reads a few (class, share) pairs per label instead of the full row.
template <typename TP>
void majority_vote_into(const Crowd& c, const double* weights, int n_threads, TP* out,
                        CompactPosteriors<TP>* compact = nullptr);

}  // namespace luab::aggregate
