#include "zero_based_skill.hpp"

#include <vector>

#include "../common/check.hpp"
#include "em_kernels.hpp"
#include "majority_vote.hpp"

namespace luab::aggregate {

int64_t zero_based_skill(const Crowd& c, double* skills, const ZBSOptions& opt, int64_t* labels) {
  LUAB_CHECK(opt.lr_steps_to_reduce != 0, "lr_steps_to_reduce must not be 0 (the iteration number is taken modulo it)");
  const int nt = resolve_threads(opt.n_threads, c.n_labels);  // a vote and an accuracy: a few passes over the labels
  // every table of the loop, allocated once
  const std::vector<uint8_t> first = first_answers(c, nt);
  std::vector<int64_t> vote(static_cast<size_t>(c.n_tasks));
  std::vector<double> hits(static_cast<size_t>(c.n_workers)), counted(static_cast<size_t>(c.n_workers));
  double lr = opt.lr_init;
  for (int it = 1; it <= opt.n_iter; ++it) {
    if (it % opt.lr_steps_to_reduce == 0) lr *= opt.lr_reduce_factor;
    const int64_t undefined = crowdkit_vote(c, skills, nullptr, nt, nullptr, vote.data());
    LUAB_CHECK(undefined == 0, "Zero-Based Skill, iteration ", it, ": ", undefined, " task(s) have no label of nonzero "
               "skill, so their weighted majority vote is undefined (crowd-kit raises here too)");
    worker_accuracy(c, vote.data(), first.data(), hits.data(), counted.data(), nt);
    // the same operations in the same order as crowd-kit's pandas expression skills + lr * (accuracy - skills);
    // a worker without answers (none in a crowd-kit frame) has no accuracy and keeps its skill
    for (int64_t w = 0; w < c.n_workers; ++w)
      if (counted[w] > 0.0) skills[w] = skills[w] + lr * (hits[w] / counted[w] - skills[w]);
  }
  return labels != nullptr ? crowdkit_vote(c, skills, nullptr, nt, nullptr, labels) : 0;
}

}  // namespace luab::aggregate
