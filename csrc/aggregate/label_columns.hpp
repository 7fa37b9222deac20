// The three label columns every luab_fast._C.aggregate binding takes (task, worker, label: dense int64 ids, one
// row per label), checked as arrays here; build_crowd checks the ids.
#pragma once

#include <pybind11/numpy.h>

#include <cstdint>

#include "../common/pyarray.hpp"
#include "crowd.hpp"

namespace luab::aggregate {

struct LabelColumns {
  const int64_t* task;
  const int64_t* worker;
  const int64_t* label;
  int64_t n;  // rows
};

// task, worker, label: C-contiguous int64 [n] each, n the length of task; checked in that order, else ValueError
// naming the column ("worker must have shape (4,), got (3,)").
inline LabelColumns label_columns(const pybind11::array& task, const pybind11::array& worker,
                                  const pybind11::array& label) {
  const int64_t n = task.ndim() == 1 ? task.shape(0) : -1;
  const int64_t* t = checked_vector<int64_t>(task, "task", -1, "int64");
  const int64_t* w = checked_vector<int64_t>(worker, "worker", n, "int64");
  const int64_t* l = checked_vector<int64_t>(label, "label", n, "int64");
  return {t, w, l, n};
}

// build_crowd over the columns.
inline Crowd build_crowd(const LabelColumns& l, int64_t n_tasks, int64_t n_workers, int64_t n_classes,
                         bool confusion_tables = false) {
  return build_crowd(l.task, l.worker, l.label, l.n, n_tasks, n_workers, n_classes, confusion_tables);
}

}  // namespace luab::aggregate
