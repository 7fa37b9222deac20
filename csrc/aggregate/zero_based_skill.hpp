// Zero-Based Skill (crowd-kit 1.4.2, aggregation/classification/zero_based_skill.py): a skill-weighted majority vote
// repeated n_iter times, each time moving every worker's skill toward their accuracy against the vote's labels,
//   skill <- skill + lr * (accuracy - skill),   lr multiplied by lr_reduce_factor at every lr_steps_to_reduce-th step.
// The vote and the accuracy are crowd-kit's to the bit (majority_vote.hpp), so the skills are too.
#pragma once

#include <cstdint>

#include "crowd.hpp"

namespace luab::aggregate {

struct ZBSOptions {
  int n_iter = 100;
  double lr_init = 1.0;
  int64_t lr_steps_to_reduce = 20;  // != 0 (crowd-kit takes the iteration number modulo it)
  double lr_reduce_factor = 0.5;
  int n_threads = 0;
};

// skills [W]: the start on entry (crowd-kit: 1 / K + eps for everyone), the fitted skills on return. Throws
// std::invalid_argument when a vote leaves a task without any label of nonzero weight (every share NaN), where
// crowd-kit's idxmax raises. labels [T] or nullptr: also the vote weighted by the fitted skills (crowd-kit's
// predict); returns the number of tasks it labels -1.
int64_t zero_based_skill(const Crowd& c, double* skills, const ZBSOptions& opt, int64_t* labels = nullptr);

}  // namespace luab::aggregate
