// KOS message passing (kos.hpp). Messages live on the edges (labels), all of them in worker-CSR order: the task
// half-step reads each task's worker messages through a position map and writes its outgoing messages back to
// those same positions, so the worker half-step reads and writes its groups straight through, without a random
// read. With rows sorted by task (the usual input) the task half-step's positions advance through each worker's
// group in step, so it streams too: one random access per label and iteration became none. One task, or one
// worker, per sum, in input order: any thread count gives the same bits.
//
// Messages are kept multiplied by their label's vote (±1, so exactly): crowd-kit's "multiplied" term of an edge
// is then the incoming message itself, and the vote is applied once, when the outgoing message is written.
#include "kos.hpp"

#include <algorithm>
#include <type_traits>
#include <climits>
#include <cmath>
#include <utility>
#include <vector>

#include <omp.h>

#include "../common/check.hpp"
#include "../common/parallel.hpp"
#include "em_kernels.hpp"
#include "pandas_sums.hpp"

namespace luab::aggregate {
namespace {

// Groups summed side by side in the Kahan mode: each compensated sum is one chain of dependent adds (~16 cycles
// per value); eight independent chains keep the adders busy.
constexpr int kLanesKahan = 8;

// The labels as graph edges, in both CSR orders (int32 positions: half the index traffic of int64).
struct Edges {
  Buffer<uint8_t> task_negative;    // [N] task order: 1 where the label is class 1 (votes −1)
  Buffer<uint8_t> worker_negative;  // [N] worker order
  Buffer<int32_t> worker_pos;       // task-order position → worker-order position of the same label
};

// Where a half-step reads and writes a group's messages: position i of its CSR view is message at(i).
struct Direct {
  int64_t operator()(int64_t i) const { return i; }
};
struct Mapped {
  const int32_t* pos;
  int64_t operator()(int64_t i) const { return pos[i]; }
};

// build_crowd places label j at the next free slot of its task and of its worker (a stable counting sort);
// replaying that walk gives each label's two positions. Also writes the signed initial reliabilities
// (vote · reliability) in worker order.
Edges make_edges(const Crowd& c, const int64_t* task, const int64_t* worker, const double* init_reliability,
                 double* signed_reliability) {
  const int64_t N = c.n_labels;
  Edges e{Buffer<uint8_t>(N, Uninitialized{}), Buffer<uint8_t>(N, Uninitialized{}),
          Buffer<int32_t>(N, Uninitialized{})};
  std::vector<int64_t> next_t(c.task_ptr.begin(), c.task_ptr.end() - 1);
  std::vector<int64_t> next_w(c.worker_ptr.begin(), c.worker_ptr.end() - 1);
  for (int64_t j = 0; j < N; ++j) {
    const int64_t p = next_t[task[j]]++;
    const int64_t q = next_w[worker[j]]++;
    e.worker_pos[p] = static_cast<int32_t>(q);
    signed_reliability[q] = c.worker_label[q] == 0 ? init_reliability[j] : -init_reliability[j];
  }
  for (int64_t p = 0; p < N; ++p) e.task_negative[p] = c.task_label[p] != 0;
  for (int64_t q = 0; q < N; ++q) e.worker_negative[q] = c.worker_label[q] != 0;
  return e;
}

// pandas_group_sum's Kahan loop over up to kLanesKahan groups at once (group l: incoming[at(begin[l] + k)],
// k < n[l]): the same operations per group, so the same bits.
// Eight groups' Kahan sums interleaved (independent dependency chains, so the adds overlap), each in its own row
// order as pandas sums it; every incoming message is read once, into gathered[at[l] + k], which the outgoing pass
// then reads instead of a second random read of `incoming` (the gather is the cost: random reads).
template <typename At>
void kahan_lanes(const double* incoming, At at_message, const int64_t* begin, const int64_t* n, int lanes,
                 const int64_t* at, double* gathered, double* out) {
  double sum[kLanesKahan] = {}, comp[kLanesKahan] = {};
  int64_t longest = 0;
  for (int l = 0; l < lanes; ++l) longest = std::max(longest, n[l]);
  for (int64_t k = 0; k < longest; ++k)
    for (int l = 0; l < lanes; ++l)
      if (k < n[l]) {
        const double v = incoming[at_message(begin[l] + k)];
        gathered[at[l] + k] = v;
        kahan_add(v, sum[l], comp[l]);
      }
  for (int l = 0; l < lanes; ++l) out[l] = sum[l];
}

// Groups of at most this many values, in runs, are summed by short_runs_lanes: numpy's pairwise sum of the values
// after the first is then one left-to-right chain from −0.0 (numpy_pairwise_sum's n < 8 case).
constexpr int64_t kShortRun = 8;

// pandas_group_sum's in-runs sum (value 0 + numpy's pairwise sum of the rest) of up to kLanesKahan short groups
// side by side: typical tasks hold a handful of labels, and one group at a time left each sum's few reads waiting
// on each other and on a call; interleaved, the reads of eight groups are in flight at once. Same adds in the same
// order per group, so the same bits.
template <typename At>
void short_runs_lanes(const double* incoming, At at_message, const int64_t* begin, const int64_t* n, int lanes,
                      int64_t longest, const int64_t* at, double* gathered, double* out) {
  double first[kLanesKahan] = {}, rest[kLanesKahan];
  for (int l = 0; l < lanes; ++l) rest[l] = -0.0;
  for (int64_t k = 0; k < longest; ++k)
    for (int l = 0; l < lanes; ++l)
      if (k < n[l]) {
        const double v = incoming[at_message(begin[l] + k)];
        gathered[at[l] + k] = v;
        if (k == 0)
          first[l] = v;
        else
          rest[l] += v;
      }
  for (int l = 0; l < lanes; ++l) out[l] = n[l] == 0 ? 0.0 : first[l] + rest[l];
}

// The most labels one block of kLanesKahan groups holds: the size of each thread's gather buffer.
int64_t widest_block(const std::vector<int64_t>& ptr) {
  const int64_t n_groups = static_cast<int64_t>(ptr.size()) - 1;
  int64_t widest = 0;
  for (int64_t g0 = 0; g0 < n_groups; g0 += kLanesKahan)
    widest = std::max(widest, ptr[std::min(g0 + kLanesKahan, n_groups)] - ptr[g0]);
  return widest;
}

// One half-step: each group's sum of its incoming messages (read at at_message(i) for CSR position i), and, with
// `outgoing`, each of its labels' outgoing message (written at the same at_message(i)). gathered_all: n_threads ×
// widest doubles, allocated once per fit (no allocation in the iterations).
template <typename At>
bool half_step(const std::vector<int64_t>& ptr, const uint8_t* negative, At at_message, const double* incoming,
               double* outgoing, double* score, bool in_runs, double max_abs, int n_threads, double* gathered_all,
               int64_t widest) {
  const int64_t n_groups = static_cast<int64_t>(ptr.size()) - 1;
  const int64_t n_blocks = (n_groups + kLanesKahan - 1) / kLanesKahan;
  bool over = false;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 64) reduction(|| : over)
  for (int64_t b = 0; b < n_blocks; ++b) {
    double* gathered = gathered_all + static_cast<int64_t>(omp_get_thread_num()) * widest;
    const int64_t g0 = b * kLanesKahan;
    const int lanes = static_cast<int>(std::min<int64_t>(kLanesKahan, n_groups - g0));
    int64_t begin[kLanesKahan], n[kLanesKahan], at[kLanesKahan], longest = 0;
    double s[kLanesKahan];
    for (int l = 0; l < lanes; ++l) {
      begin[l] = ptr[g0 + l];
      n[l] = ptr[g0 + l + 1] - begin[l];
      longest = std::max(longest, n[l]);
      at[l] = begin[l] - ptr[g0];  // the block's groups are contiguous: pack them as they lie
    }
    constexpr bool direct = std::is_same_v<At, Direct>;  // values in place: no copy to gather
    if (in_runs && longest <= kShortRun) {
      short_runs_lanes(incoming, at_message, begin, n, lanes, longest, at, gathered, s);
    } else if (in_runs) {
      for (int l = 0; l < lanes; ++l) {
        double* g = gathered + at[l];
        for (int64_t k = 0; k < n[l]; ++k) g[k] = incoming[at_message(begin[l] + k)];
        s[l] = pandas_group_sum([g](int64_t k) { return g[k]; }, n[l], true);
      }
    } else {
      kahan_lanes(incoming, at_message, begin, n, lanes, at, gathered, s);
    }
    for (int l = 0; l < lanes; ++l) {
      over = over || std::fabs(s[l]) > max_abs;
      if (score != nullptr) score[g0 + l] = s[l];
      if (outgoing == nullptr) continue;
      const double* g = direct ? incoming + begin[l] : gathered + at[l];
      for (int64_t k = 0; k < n[l]; ++k)  // × ±1, exact; a multiply, not a branch on random votes
        outgoing[at_message(begin[l] + k)] = (s[l] - g[k]) * (1.0 - 2.0 * negative[begin[l] + k]);
    }
  }
  return over;
}

}  // namespace

KOSResult kos(const Crowd& c, const int64_t* task, const int64_t* worker, const double* init_reliability,
              int n_iter, double max_abs, KOSSums sums, int n_threads) {
  LUAB_CHECK(c.n_classes == 2, "KOS needs a binary crowd (n_classes == 2), got n_classes=", c.n_classes);
  LUAB_CHECK(c.n_labels <= INT32_MAX, "KOS handles at most ", INT32_MAX, " labels, got ", c.n_labels);
  LUAB_CHECK(n_iter >= 0, "n_iter must be >= 0, got ", n_iter);
  LUAB_CHECK(!(max_abs < 0.0), "max_abs must be >= 0, got ", max_abs);
  const int nt = resolve_threads(n_threads, c.n_labels * c.n_classes);
  const int64_t N = c.n_labels;
  // reliability, inferred: worker order, signed by their label's vote
  Buffer<double> reliability(N, Uninitialized{}), next_reliability(N, Uninitialized{});
  Buffer<double> inferred(N, Uninitialized{});
  const Edges e = make_edges(c, task, worker, init_reliability, reliability.data());
  const int64_t widest = std::max(widest_block(c.task_ptr), widest_block(c.worker_ptr));
  checked_size("n_threads * labels of the widest block", {nt, widest});
  Buffer<double> gathered(static_cast<int64_t>(nt) * widest, Uninitialized{});

  KOSResult r;
  for (int it = 0; it < n_iter; ++it) {
    // tasks → workers: a worker's inferred label for each of its tasks, from the task's other workers
    const Mapped at_worker{e.worker_pos.data()};
    if (half_step(c.task_ptr, e.task_negative.data(), at_worker, reliability.data(), inferred.data(), nullptr,
                  sums.tasks_in_runs, max_abs, nt, gathered.data(), widest)) {
      r.overflowed = true;
      break;
    }
    // workers → tasks: a worker's reliability on each task, from its other tasks; kept only if no sum overflowed
    if (half_step(c.worker_ptr, e.worker_negative.data(), Direct{}, inferred.data(), next_reliability.data(),
                  nullptr, sums.workers_in_runs, max_abs, nt, gathered.data(), widest)) {
      r.overflowed = true;
      break;
    }
    std::swap(reliability, next_reliability);
    r.n_iter_run = it + 1;
  }
  // the answer: each task's sum of vote · reliability (crowd-kit's final groupby("task") sum)
  r.task_score = Buffer<double>(c.n_tasks, Uninitialized{});
  half_step(c.task_ptr, e.task_negative.data(), Mapped{e.worker_pos.data()}, reliability.data(), nullptr,
            r.task_score.data(), sums.tasks_in_runs, max_abs, nt, gathered.data(), widest);
  return r;
}

}  // namespace luab::aggregate
