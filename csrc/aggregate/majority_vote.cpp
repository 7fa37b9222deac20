#include "majority_vote.hpp"

#include "em_kernels.hpp"

namespace luab::aggregate {

Buffer<double> majority_vote(const Crowd& c, const double* weights, int n_threads) {
  const int nt = resolve_threads(n_threads, c.n_labels * c.n_classes);
  const int64_t K = c.n_classes;
  Buffer<double> post(c.n_tasks * K, 0.0);
  double* out = post.data();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 256)
  for (int64_t i = 0; i < c.n_tasks; ++i) {
    double* row = out + i * K;
    double total = 0.0;
    for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
      const double v = weights != nullptr ? weights[c.task_worker[j]] : 1.0;
      row[c.task_label[j]] += v;
      total += v;
    }
    if (total != 0.0) {
      for (int64_t y = 0; y < K; ++y) row[y] /= total;
    } else {
      for (int64_t y = 0; y < K; ++y) row[y] = 1.0 / static_cast<double>(K);
    }
  }
  return post;
}

}  // namespace luab::aggregate
