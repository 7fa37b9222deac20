#include "majority_vote.hpp"

#include <algorithm>
#include <vector>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "em_kernels.hpp"

namespace luab::aggregate {

template <typename TP>
void majority_vote_into(const Crowd& c, const double* weights, int n_threads, TP* out,
                        CompactPosteriors<TP>* compact) {
  const int64_t K = c.n_classes;
  FirstError err;  // the per-thread row is the region's only allocation (an exception cannot leave the region)
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<double> row;
    const bool ready = err.run([&] { row.resize(K); });
    // each thread writes (and so first-touches) its own rows: no serial zero-fill of the whole table
#pragma omp for schedule(dynamic, 256)
    for (int64_t i = 0; i < c.n_tasks; ++i) {
      if (!ready) continue;
      std::fill(row.begin(), row.end(), 0.0);
      double total = 0.0;
      for (int64_t j = c.task_ptr[i]; j < c.task_ptr[i + 1]; ++j) {
        const double v = weights != nullptr ? weights[c.task_worker[j]] : 1.0;
        row[c.task_label[j]] += v;
        total += v;
      }
      TP* dst = out + i * K;
      if (total != 0.0) {
        for (int64_t y = 0; y < K; ++y) dst[y] = static_cast<TP>(row[y] / total);
        if (compact != nullptr) {  // the same shares as the row just written: the M-step's sums do not change
          for (int64_t y = 0; y < K; ++y) row[y] /= total;
          compact->set_row(i, row.data(), K);
        }
      } else {
        for (int64_t y = 0; y < K; ++y) dst[y] = static_cast<TP>(1.0 / static_cast<double>(K));
      }
    }
  }
  err.rethrow();
}

template void majority_vote_into<double>(const Crowd&, const double*, int, double*, CompactPosteriors<double>*);
template void majority_vote_into<float>(const Crowd&, const double*, int, float*, CompactPosteriors<float>*);

Buffer<double> majority_vote(const Crowd& c, const double* weights, int n_threads) {
  const int nt = resolve_threads(n_threads, c.n_labels * c.n_classes);
  checked_size("n_tasks * n_classes", {c.n_tasks, c.n_classes});
  Buffer<double> post(c.n_tasks * c.n_classes, Uninitialized{});
  majority_vote_into(c, weights, nt, post.data());
  return post;
}

}  // namespace luab::aggregate
