// Template definitions for em_kernels.hpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace luab::aggregate {

// Fixed block size: the reduction tree depends only on n_tasks, never on the thread count.
constexpr int64_t kReduceBlock = 2048;

template <typename F>
double blocked_task_sum(int64_t n_tasks, int n_threads, F&& f) {
  const int64_t n_blocks = (n_tasks + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(n_blocks), 0.0);
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t lo = b * kReduceBlock;
    const int64_t hi = lo + kReduceBlock < n_tasks ? lo + kReduceBlock : n_tasks;
    double s = 0.0;
    for (int64_t i = lo; i < hi; ++i) s += f(i);
    partial[b] = s;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace luab::aggregate
