// luab_fast._C.aggregate: the KOS and M-MSR engines' bindings (luab_fast.crowdkit.KOS / MMSR). Thin: validate
// every array and argument (naming it), release the GIL around the compiled work, return numpy arrays that own
// their buffers. The random starts come in from Python, drawn there with crowd-kit's own numpy calls.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "aggregate/crowd.hpp"
#include "aggregate/kos.hpp"
#include "aggregate/mmsr.hpp"
#include "common/buffer.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

namespace {

// A C-contiguous 1-D array of T with n elements (n < 0: any length).
template <typename T>
const T* vector_of(const py::array& a, const char* name, int64_t n, const char* dtype_name) {
  LUAB_CHECK(a.dtype().is(py::dtype::of<T>()), name, " must be a ", dtype_name, " array, got dtype ",
             luab::dtype_of(a));
  LUAB_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous");
  LUAB_CHECK(a.ndim() == 1 && (n < 0 || a.shape(0) == n), name, " must have shape (",
             n < 0 ? std::string("n") : std::to_string(n), ",), got ", luab::shape_of(a));
  return static_cast<const T*>(a.data());
}

// Finite float64 values: a NaN or inf start or skill would make every later message NaN, silently.
const double* finite_f64(const py::array& a, const char* name, int64_t n) {
  const double* p = vector_of<double>(a, name, n, "float64");
  for (int64_t i = 0; i < n; ++i)
    LUAB_CHECK(std::isfinite(p[i]), name, " must hold finite values, got ", p[i], " at index ", i);
  return p;
}

int iterations(int64_t n, const char* name) {
  LUAB_CHECK(n >= 0 && n <= INT_MAX, name, " must be in 0..", INT_MAX, ", got ", n);
  return static_cast<int>(n);
}

// The three label columns (dense ids, checked again by build_crowd) and the CSR crowd built from them.
struct Labels {
  const int64_t* task;
  const int64_t* worker;
  const int64_t* label;
  int64_t n;
};

Labels labels_of(const py::array& task, const py::array& worker, const py::array& label) {
  const int64_t n = task.ndim() == 1 ? task.shape(0) : -1;
  const int64_t* t = vector_of<int64_t>(task, "task", -1, "int64");
  return {t, vector_of<int64_t>(worker, "worker", n, "int64"), vector_of<int64_t>(label, "label", n, "int64"), n};
}

template <typename T>
py::array_t<T> to_numpy(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, heap->data(), owner);
}

template <typename T>
py::array_t<T> to_numpy(luab::Buffer<T>&& b, std::vector<py::ssize_t> shape) {
  T* p = b.release();
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array_t<T>(shape, p, owner);
}

}  // namespace

void init_aggregate_kos_mmsr(py::module_& a) {
  a.def(
      "kos",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         const py::array& init_reliability, int64_t n_iter, double max_abs, bool tasks_in_runs, bool workers_in_runs,
         int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        const int iters = iterations(n_iter, "n_iter");
        LUAB_CHECK(max_abs >= 0.0, "max_abs must be a number >= 0, got ", max_abs);
        LUAB_CHECK(n_workers >= 0, "n_workers must be >= 0, got ", n_workers);
        const Labels l = labels_of(task, worker, label);
        const double* init = finite_f64(init_reliability, "init_reliability", l.n);
        agg::KOSResult r;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l.task, l.worker, l.label, l.n, n_tasks, n_workers, 2);
          r = agg::kos(c, l.task, l.worker, init, iters, max_abs, {tasks_in_runs, workers_in_runs}, threads);
        }
        py::dict out;
        out["task_score"] = to_numpy(std::move(r.task_score), {n_tasks});
        out["n_iter"] = r.n_iter_run;
        out["overflowed"] = r.overflowed;
        return out;
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("init_reliability"), py::arg("n_iter") = 100, py::arg("max_abs") = 1e300,
      py::arg("tasks_in_runs") = false, py::arg("workers_in_runs") = false, py::arg("n_threads") = 0,
      "KOS message passing on a binary crowd (label 0 votes +1, label 1 votes -1) from one starting reliability "
      "per label (input order). tasks_in_runs / workers_in_runs: the rows come sorted by task / worker, so pandas "
      "sums those groups pairwise rather than by Kahan. Keys: task_score [T] (the sign gives the label), n_iter "
      "(whole iterations run), overflowed (stopped by |sum| > max_abs).");

  a.def(
      "mmsr",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& u0, const py::array& v0, int64_t n_iter, double tol,
         int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        const int iters = iterations(n_iter, "n_iter");
        LUAB_CHECK(!std::isnan(tol), "tol must be a number, got NaN");
        LUAB_CHECK(n_classes >= 2, "n_classes must be >= 2 (M-MSR divides by n_classes - 1), got ", n_classes);
        LUAB_CHECK(n_tasks >= 1, "n_tasks must be >= 1, got ", n_tasks);
        LUAB_CHECK(n_workers >= 1, "n_workers must be >= 1, got ", n_workers);
        const Labels l = labels_of(task, worker, label);
        const double* u = finite_f64(u0, "u0", n_workers);
        const double* v = finite_f64(v0, "v0", n_workers);
        agg::WorkerPairs p;
        agg::MMSRResult r;
        std::vector<double> row_sums(static_cast<size_t>(n_workers));
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l.task, l.worker, l.label, l.n, n_tasks, n_workers, n_classes);
          p = agg::build_worker_pairs(c, threads);
          agg::covariation_row_sums(p, row_sums.data(), threads);
          r = agg::mmsr(p, u, v, iters, tol, n_tasks, threads);
        }
        py::dict out;
        out["u"] = to_numpy(std::move(r.u));
        out["v"] = to_numpy(std::move(r.v));
        out["loss_history"] = std::move(r.loss_history);
        out["pair_ptr"] = to_numpy(std::move(p.ptr));
        out["partner"] = to_numpy(std::move(p.partner));
        out["common"] = to_numpy(std::move(p.common));
        out["cov"] = to_numpy(std::move(p.cov));
        out["unobserved_cov"] = p.unobserved_cov;
        out["min_partners"] = p.min_partners;
        out["row_sums"] = to_numpy(std::move(row_sums));
        return out;
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("u0"), py::arg("v0"), py::arg("n_iter") = 10000, py::arg("tol") = 1e-10,
      py::arg("n_threads") = 0,
      "M-MSR's rank-one fit of the workers' covariation matrix from u0, v0 [W]. Keys: u, v [W], loss_history; the "
      "sparse covariation matrix (pair_ptr [W+1], partner, common, cov: the observed pairs, partners ascending; "
      "unobserved_cov: every other entry and the diagonal), min_partners, row_sums [W] (numpy's sum(axis=1)).");

  a.def(
      "weighted_vote_shares",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& skills, bool in_runs, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        LUAB_CHECK(n_workers >= 0, "n_workers must be >= 0, got ", n_workers);
        const Labels l = labels_of(task, worker, label);
        const double* s = finite_f64(skills, "skills", n_workers);
        luab::Buffer<double> shares;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l.task, l.worker, l.label, l.n, n_tasks, n_workers, n_classes);
          shares = agg::weighted_vote_shares(c, s, in_runs, threads);
        }
        return to_numpy(std::move(shares), {n_tasks, n_classes});
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("skills"), py::arg("in_runs") = false, py::arg("n_threads") = 0,
      "crowd-kit's MajorityVote(skills=...).probas_ as [T, K]: per task the skills behind each label, summed as "
      "pandas sums them (in_runs: the rows come sorted by (task, label)), divided by the row total (negative "
      "skills allowed).");
}
