// KOS (Karger, Oh & Shah, "Iterative learning for reliable crowdsourcing systems", NeurIPS 2011): message
// passing over the task–worker graph of a binary crowd, in the order crowd-kit 1.4.2 (kos.py) runs it, so that
// the same initial reliabilities give crowd-kit's messages bit for bit.
#pragma once

#include <cstdint>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

struct KOSResult {
  Buffer<double> task_score;  // [T] Σ over the task's labels of vote · reliability after the last whole iteration
  int n_iter_run = 0;         // iterations whose two half-steps both completed
  bool overflowed = false;    // stopped early by the |sum| > max_abs guard (crowd-kit's _MAX)
};

// How pandas will sum each grouping: whether the input rows come sorted by task, and by worker (pandas_group_sum,
// pandas_sums.hpp).
struct KOSSums {
  bool tasks_in_runs = false;
  bool workers_in_runs = false;
};

// c: a binary crowd (class 0 votes +1, class 1 votes −1) built from (task, worker) [n_labels], which give each
// label's place in the two CSR views. init_reliability [n_labels]: each label's starting worker message, in
// input order. Each half-step sums one task's (or worker's) messages in input order; if any sum's magnitude
// exceeds max_abs the iteration stops and the reliabilities of the last whole iteration are kept.
KOSResult kos(const Crowd& c, const int64_t* task, const int64_t* worker, const double* init_reliability,
              int n_iter, double max_abs, KOSSums sums, int n_threads);

}  // namespace luab::aggregate
