#include "em_kernels.hpp"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../common/parallel.hpp"

namespace luab::aggregate {

int resolve_threads(int n_threads, int64_t work) {
  if (check_threads(n_threads) > 0) return n_threads;
  return work < (int64_t{1} << 18) ? 1 : default_threads();
}

void accumulate_hard_counts(const Crowd& c, const int32_t* yhat, double* counts, int n_threads) {
  const int64_t K = c.n_classes;
  const int64_t KK = K * K;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 16)
  for (int64_t w = 0; w < c.n_workers; ++w) {
    double* cw = counts + w * KK;
    std::memset(cw, 0, sizeof(double) * KK);
    for (int64_t j = c.worker_ptr[w]; j < c.worker_ptr[w + 1]; ++j)
      cw[static_cast<int64_t>(c.worker_label[j]) * K + yhat[c.worker_task[j]]] += 1.0;
  }
}

template <typename TP>
void mean_labelled_posterior(const Crowd& c, const TP* post, double* out, int n_threads, double* label_totals) {
  const int64_t K = c.n_classes;
  const int64_t n_blocks = (c.n_tasks + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(n_blocks * 2 * K), 0.0);
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1)
  for (int64_t b = 0; b < n_blocks; ++b) {
    double* acc = partial.data() + b * 2 * K;
    double* wacc = acc + K;
    const int64_t hi = std::min(c.n_tasks, (b + 1) * kReduceBlock);
    for (int64_t i = b * kReduceBlock; i < hi; ++i) {
      const double n_i = static_cast<double>(c.task_ptr[i + 1] - c.task_ptr[i]);
      if (n_i == 0.0) continue;
      const TP* p = post + i * K;
      for (int64_t y = 0; y < K; ++y) {
        acc[y] += static_cast<double>(p[y]);
        wacc[y] += n_i * static_cast<double>(p[y]);
      }
    }
  }
  std::fill(out, out + K, 0.0);
  if (label_totals != nullptr) std::fill(label_totals, label_totals + K, 0.0);
  for (int64_t b = 0; b < n_blocks; ++b)
    for (int64_t y = 0; y < K; ++y) {
      out[y] += partial[b * 2 * K + y];
      if (label_totals != nullptr) label_totals[y] += partial[b * 2 * K + K + y];
    }
  const double n = static_cast<double>(std::max<int64_t>(c.n_labelled_tasks, 1));
  for (int64_t y = 0; y < K; ++y) out[y] /= n;
}

template void mean_labelled_posterior<double>(const Crowd&, const double*, double*, int, double*);
template void mean_labelled_posterior<float>(const Crowd&, const float*, double*, int, double*);

void argmax_labelled_rows(const Crowd& c, const double* post, int32_t* out, int n_threads) {
  const int64_t k = c.n_classes;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1024)
  for (int64_t i = 0; i < c.n_tasks; ++i) {
    if (c.task_ptr[i] == c.task_ptr[i + 1]) {
      out[i] = 0;
      continue;
    }
    const double* p = post + i * k;
    double m = p[0];
    for (int64_t y = 1; y < k; ++y) m = std::max(m, p[y]);
    const double tied = m * (1.0 - kArgmaxTieTolerance);
    int64_t best = 0;
    while (p[best] < tied) ++best;  // the lowest class within the tolerance of the maximum
    out[i] = static_cast<int32_t>(best);
  }
}

}  // namespace luab::aggregate
