// Posterior rows in compact form, for the soft M-step.
//
// The M-step adds one posterior row per label to its worker's counts: with K = 100 that is a random 400–800 B
// read per label, and it dominated the EM loop. After the first iterations nearly all of a row's mass sits in
// one or two classes (measured: 1.06 classes per task above 1e-12 on the 100k × 100 benchmark crowd), so each
// task also keeps its classes with p ≥ tau as up to kCap (class, p) pairs, and the M-step reads those instead;
// a task with more than kCap such classes is marked kDense and its full row is read.
//
// What is dropped: classes with p < tau. A count cell then misses at most n_w · tau of its exact value (n_w =
// the worker's number of labels); tau is chosen so that this stays below 1% of the 1e-10 floor that crowd-kit
// puts under every observed cell (for_crowd), i.e. far below anything the posteriors can show at 1e-6.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../common/buffer.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

template <typename TP>
struct PostEntry {
  int32_t y;
  TP p;
};

template <typename TP>
class CompactPosteriors {
 public:
  static constexpr int64_t kCap = 4;
  static constexpr uint8_t kDense = 0xFF;

  CompactPosteriors(int64_t n_tasks, double tau)
      : tau_(tau), entries_(static_cast<size_t>(n_tasks * kCap), Uninitialized{}),
        count_(static_cast<size_t>(n_tasks), uint8_t{kDense}) {}

  // tau = 1% of the clip floor spread over the busiest worker's labels (see the file comment)
  static double tau_for(const Crowd& c, double clip) {
    int64_t most = 1;
    for (int64_t w = 0; w < c.n_workers; ++w) most = std::max(most, c.worker_ptr[w + 1] - c.worker_ptr[w]);
    return 1e-2 * clip / static_cast<double>(most);
  }

  // Records row i (already normalised); called by whichever thread computed it.
  void set_row(int64_t i, const double* row, int64_t k) {
    int64_t kept = 0;  // a branch-free count first (it vectorises); most rows then need one short gather
    for (int64_t y = 0; y < k; ++y) kept += row[y] >= tau_;
    set_row_counted(i, row, k, kept);
  }

  // The same, for a caller that has counted the row's entries >= tau() in a pass of its own.
  void set_row_counted(int64_t i, const double* row, int64_t /*k*/, int64_t kept) {
    if (kept > kCap) {
      count_[i] = kDense;
      return;
    }
    PostEntry<TP>* e = entries_.data() + i * kCap;
    for (int64_t y = 0, n = 0; n < kept; ++y)
      if (row[y] >= tau_) e[n++] = PostEntry<TP>{static_cast<int32_t>(y), static_cast<TP>(row[y])};
    count_[i] = static_cast<uint8_t>(kept);
  }

  uint8_t count(int64_t i) const { return count_[i]; }
  const PostEntry<TP>* row(int64_t i) const { return entries_.data() + i * kCap; }
  double tau() const { return tau_; }

 private:
  double tau_;
  Buffer<PostEntry<TP>> entries_;  // [T, kCap]
  Buffer<uint8_t> count_;          // [T]: entries used, or kDense
};

}  // namespace luab::aggregate
