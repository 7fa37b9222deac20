#include "crowd.hpp"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "../common/check.hpp"
#include "../common/parallel.hpp"

namespace luab::aggregate {

namespace {

// The sizes and every id checked, before anything is allocated.
void check_crowd(const int64_t* task, const int64_t* worker, const int64_t* label, int64_t n_labels, int64_t n_tasks,
                 int64_t n_workers, int64_t n_classes, bool confusion_tables) {
  LUAB_CHECK(n_labels >= 0, "n_labels must be >= 0, got ", n_labels);
  LUAB_CHECK(n_tasks >= 0, "n_tasks must be >= 0, got ", n_tasks);
  LUAB_CHECK(n_workers >= 0, "n_workers must be >= 0, got ", n_workers);
  LUAB_CHECK(n_classes >= 1, "n_classes must be >= 1, got ", n_classes);
  LUAB_CHECK(n_workers <= std::numeric_limits<int32_t>::max(), "n_workers must fit in int32, got ", n_workers);
  LUAB_CHECK(n_classes <= 65536, "n_classes must be <= 65536, got ", n_classes);
  // every estimator's [T, K] posteriors and the [W, K] observed table below (also bounds n_tasks + 1)
  checked_size("n_tasks * n_classes", {n_tasks, n_classes});
  checked_size("n_workers * n_classes", {n_workers, n_classes});
  if (confusion_tables) checked_size("n_workers * n_classes * n_classes", {n_workers, n_classes, n_classes});
  for (int64_t j = 0; j < n_labels; ++j) {
    LUAB_CHECK(task[j] >= 0 && task[j] < n_tasks, "task ids must be in [0, ", n_tasks, "), got ", task[j],
               " at position ", j);
    LUAB_CHECK(worker[j] >= 0 && worker[j] < n_workers, "worker ids must be in [0, ", n_workers, "), got ",
               worker[j], " at position ", j);
    LUAB_CHECK(label[j] >= 0 && label[j] < n_classes, "labels must be in [0, n_classes=", n_classes, "), got ",
               label[j], " at position ", j);
  }
}

// check_crowd's checks, then a Crowd of those sizes with no labels placed yet.
Crowd empty_crowd(const int64_t* task, const int64_t* worker, const int64_t* label, int64_t n_labels, int64_t n_tasks,
                  int64_t n_workers, int64_t n_classes, bool confusion_tables) {
  check_crowd(task, worker, label, n_labels, n_tasks, n_workers, n_classes, confusion_tables);
  Crowd c;
  c.n_tasks = n_tasks;
  c.n_workers = n_workers;
  c.n_classes = n_classes;
  c.n_labels = n_labels;
  c.task_ptr.assign(n_tasks + 1, 0);
  return c;
}

// task_ptr from the label counts in task_ptr[i + 1] (their prefix sums), counting the tasks with labels.
void finish_task_ptr(Crowd& c) {
  const int64_t n_tasks = c.n_tasks;
  for (int64_t i = 0; i < n_tasks; ++i) {
    c.n_labelled_tasks += c.task_ptr[i + 1] > 0;
    c.task_ptr[i + 1] += c.task_ptr[i];
  }
}

}  // namespace

Crowd build_task_view(const int64_t* task, const int64_t* worker, const int64_t* label, int64_t n_labels,
                      int64_t n_tasks, int64_t n_workers, int64_t n_classes, int n_threads) {
  Crowd c = empty_crowd(task, worker, label, n_labels, n_tasks, n_workers, n_classes, false);
  // a thread per run of at least kLabelsPerThread labels, each with its own [T] counts
  constexpr int64_t kLabelsPerThread = 1 << 17;
  const int nt = static_cast<int>(std::clamp<int64_t>(n_labels / kLabelsPerThread, 1, threads_or_default(n_threads)));
  c.task_worker.resize(n_labels);
  c.task_label.resize(n_labels);
  if (nt == 1) {
    for (int64_t j = 0; j < n_labels; ++j) ++c.task_ptr[task[j] + 1];
    finish_task_ptr(c);
    std::vector<int64_t> tpos(c.task_ptr.begin(), c.task_ptr.end() - 1);
    for (int64_t j = 0; j < n_labels; ++j) {
      const int64_t t = tpos[task[j]]++;
      c.task_worker[t] = static_cast<int32_t>(worker[j]);
      c.task_label[t] = static_cast<int32_t>(label[j]);
    }
    return c;
  }
  // pos[r * T + i]: where run r's first label of task i goes; runs in label order, so each task's labels keep
  // their input order (the serial build's stable order)
  std::vector<int64_t> pos(static_cast<size_t>(nt) * n_tasks, 0);
#pragma omp parallel num_threads(nt)
  {
    const int r = omp_get_thread_num();
    const int64_t j0 = n_labels * r / nt, j1 = n_labels * (r + 1) / nt;
    int64_t* cnt = pos.data() + static_cast<int64_t>(r) * n_tasks;
    for (int64_t j = j0; j < j1; ++j) ++cnt[task[j]];
#pragma omp barrier
#pragma omp single
    {
      int64_t at = 0;
      for (int64_t i = 0; i < n_tasks; ++i) {
        c.task_ptr[i] = at;
        for (int q = 0; q < nt; ++q) {
          int64_t& slot = pos[static_cast<size_t>(q) * n_tasks + i];
          const int64_t n = slot;
          slot = at;
          at += n;
        }
        c.n_labelled_tasks += at > c.task_ptr[i];
      }
      c.task_ptr[n_tasks] = at;
    }  // implicit barrier
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t t = cnt[task[j]]++;
      c.task_worker[t] = static_cast<int32_t>(worker[j]);
      c.task_label[t] = static_cast<int32_t>(label[j]);
    }
  }
  return c;
}

// The two views' counting sorts run fused (one pass over the input for both counts, one for both scatters).
Crowd build_crowd(const int64_t* task, const int64_t* worker, const int64_t* label, int64_t n_labels,
                  int64_t n_tasks, int64_t n_workers, int64_t n_classes, bool confusion_tables) {
  Crowd c = empty_crowd(task, worker, label, n_labels, n_tasks, n_workers, n_classes, confusion_tables);
  c.worker_ptr.assign(n_workers + 1, 0);
  for (int64_t j = 0; j < n_labels; ++j) {
    ++c.task_ptr[task[j] + 1];
    ++c.worker_ptr[worker[j] + 1];
  }
  finish_task_ptr(c);
  for (int64_t w = 0; w < n_workers; ++w) c.worker_ptr[w + 1] += c.worker_ptr[w];

  c.task_worker.resize(n_labels);
  c.task_label.resize(n_labels);
  c.worker_task.resize(n_labels);
  c.worker_label.resize(n_labels);
  c.observed.assign(static_cast<size_t>(n_workers) * n_classes, 0);
  std::vector<int64_t> tpos(c.task_ptr.begin(), c.task_ptr.end() - 1);
  std::vector<int64_t> wpos(c.worker_ptr.begin(), c.worker_ptr.end() - 1);
  for (int64_t j = 0; j < n_labels; ++j) {
    const int64_t t = tpos[task[j]]++;
    c.task_worker[t] = static_cast<int32_t>(worker[j]);
    c.task_label[t] = static_cast<int32_t>(label[j]);
    const int64_t u = wpos[worker[j]]++;
    c.worker_task[u] = task[j];
    c.worker_label[u] = static_cast<int32_t>(label[j]);
    c.observed[worker[j] * n_classes + label[j]] = 1;
  }
  return c;
}

}  // namespace luab::aggregate
