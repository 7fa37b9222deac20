// Crowd labels in two CSR views: by task (for the E-step, one task per thread) and by worker
// (for the M-step, one worker's confusion rows per thread, so every sum runs in a fixed order and
// results are bitwise identical for any OpenMP thread count).
#pragma once

#include <cstdint>
#include <vector>

namespace luab::aggregate {

struct Crowd {
  int64_t n_tasks = 0;
  int64_t n_workers = 0;
  int64_t n_classes = 0;
  int64_t n_labels = 0;
  // by task: labels of task i are [task_ptr[i], task_ptr[i+1]) in (task_worker, task_label)
  std::vector<int64_t> task_ptr;
  std::vector<int32_t> task_worker;
  std::vector<int32_t> task_label;
  // by worker: labels of worker w are [worker_ptr[w], worker_ptr[w+1]) in (worker_task, worker_label)
  std::vector<int64_t> worker_ptr;
  std::vector<int64_t> worker_task;
  std::vector<int32_t> worker_label;
  // observed[w * K + z] = 1 when worker w gave label z at least once (crowd-kit keeps only those rows)
  std::vector<uint8_t> observed;
  // tasks with at least one label; the class prior is the mean posterior over these
  int64_t n_labelled_tasks = 0;
};

// Validates ids (0 <= id < n) and builds both views with a stable counting sort (input order kept).
// confusion_tables: the caller will allocate [W, K, K] tables (Dawid–Skene, Bayes), whose size is then checked
// with the others, before anything is allocated.
Crowd build_crowd(const int64_t* task, const int64_t* worker, const int64_t* label, int64_t n_labels,
                  int64_t n_tasks, int64_t n_workers, int64_t n_classes, bool confusion_tables = false);

// The task view alone, with the same checks (the worker view and `observed` stay empty): for work that reads the
// labels task by task only (crowd-kit's majority vote), as the worker view's random scatter is most of
// build_crowd's time. With n_threads > 1 (0: OpenMP's default) a large crowd's counting sort runs on that many
// threads, each over a contiguous run of the labels, so the view is the same, label for label, as a serial build's.
Crowd build_task_view(const int64_t* task, const int64_t* worker, const int64_t* label, int64_t n_labels,
                      int64_t n_tasks, int64_t n_workers, int64_t n_classes, int n_threads = 1);

}  // namespace luab::aggregate
