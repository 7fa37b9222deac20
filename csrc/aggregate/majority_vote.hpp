// (Weighted) majority vote: the normalised vote share of each class per task; and crowd-kit's vote and worker
// accuracy to the bit, which luab_fast.crowdkit's majority-vote family (and Zero-Based Skill) run on.
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

// crowd-kit 1.4.2's majority vote to the bit (aggregation/classification/majority_vote.py and utils.py), for
// luab_fast.crowdkit. A class's score is the sum of its votes' weights (weights [W], or nullptr: 1 each) in label
// order, Kahan-compensated as pandas' groupby sum adds; its share is score / (the row's scores summed in class order),
// an IEEE division as numpy's (a zero total gives NaN or ±inf shares, as crowd-kit's normalize_rows does).
// labels[i] is crowd-kit's idxmax: the first class in column order (order [K]: class indices in crowd-kit's column
// order, nullptr = index order) with the largest share, NaN counting as -inf (pandas' nanargmax); -1 when the whole
// row is NaN, where pandas raises. post [T, K] or nullptr (labels only). Returns the number of tasks labelled -1.
int64_t crowdkit_vote(const Crowd& c, const double* weights, const int64_t* order, int n_threads, double* post,
                      int64_t* labels);

// Which answers crowd-kit's get_accuracy counts: it keeps one of a worker's identical (task, label) answers
// (drop_duplicates). first[j] = 1 for the first of them in input order, 0 for repeats, in task-view order (found
// among the labels of each task, which the task view keeps in input order).
std::vector<uint8_t> first_answers(const Crowd& c, int n_threads);

// crowd-kit's get_accuracy (utils.py) per worker, over its answers with first[j] (nullptr: all) on tasks with a
// reference class (reference[t] >= 0; a value no label has, such as K, never matches): hits[w] = the answers equal to
// the reference, counted[w] = all of them. Whole numbers, so the worker's accuracy hits / counted is exact, for any
// thread count. Both read the task view only.
void worker_accuracy(const Crowd& c, const int64_t* reference, const uint8_t* first, double* hits, double* counted,
                     int n_threads);

// crowd-kit's Wawa and GoldMajorityVote fit_predict over one crowd (wawa.py, gold_majority_vote.py): each worker's
// skill is worker_accuracy against reference [T] (-1: none; nullptr: the plain vote's labels, ties in column order
// `order` as crowd_kit_vote takes it); then, when every worker has a skill (crowd-kit's MajorityVote raises
// otherwise), the vote weighted by the skills. Reads the task view only.
struct SkillVote {
  std::vector<double> hits, counted;  // [W]: skill = hits / counted where counted > 0
  std::vector<int64_t> labels;        // [T] the weighted vote's labels; empty when some worker has no skill
  int64_t undefined = 0;              // tasks labelled -1 by it (every share NaN)
};
SkillVote skill_weighted_vote(const Crowd& c, const int64_t* reference, const int64_t* order, int n_threads);

}  // namespace luab::aggregate
