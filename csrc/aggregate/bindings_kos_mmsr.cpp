// luab_fast._C.aggregate: the KOS and M-MSR engines' bindings (luab_fast.crowdkit.KOS / MMSR). Thin: validate
// every array and argument (naming it), release the GIL around the compiled work, return numpy arrays that own
// their buffers. The random starts come in from Python, drawn there with crowd-kit's own numpy calls.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "aggregate/kos.hpp"
#include "aggregate/label_columns.hpp"
#include "aggregate/mmsr.hpp"
#include "common/buffer.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

namespace {

int iterations(int64_t n, const char* name) {
  LUAB_CHECK(n >= 0 && n <= INT_MAX, name, " must be in 0..", INT_MAX, ", got ", n);
  return static_cast<int>(n);
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
        const agg::LabelColumns l = agg::label_columns(task, worker, label);
        const double* init = luab::finite_vector(init_reliability, "init_reliability", l.n);
        agg::KOSResult r;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l, n_tasks, n_workers, 2);
          r = agg::kos(c, l.task, l.worker, init, iters, max_abs, {tasks_in_runs, workers_in_runs}, threads);
        }
        py::dict out;
        out["task_score"] = luab::to_numpy(std::move(r.task_score), {n_tasks});
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
        const agg::LabelColumns l = agg::label_columns(task, worker, label);
        const double* u = luab::finite_vector(u0, "u0", n_workers);
        const double* v = luab::finite_vector(v0, "v0", n_workers);
        agg::WorkerPairs p;
        agg::MMSRResult r;
        std::vector<double> row_sums(static_cast<size_t>(n_workers));
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l, n_tasks, n_workers, n_classes);
          p = agg::build_worker_pairs(c, threads);
          agg::covariation_row_sums(p, row_sums.data(), threads);
          r = agg::mmsr(p, u, v, iters, tol, n_tasks, threads);
        }
        py::dict out;
        out["u"] = luab::to_numpy(std::move(r.u));
        out["v"] = luab::to_numpy(std::move(r.v));
        out["loss_history"] = std::move(r.loss_history);
        out["pair_ptr"] = luab::to_numpy(std::move(p.ptr));
        out["partner"] = luab::to_numpy(std::move(p.partner));
        out["common"] = luab::to_numpy(std::move(p.common));
        out["cov"] = luab::to_numpy(std::move(p.cov));
        out["unobserved_cov"] = p.unobserved_cov;
        out["min_partners"] = p.min_partners;
        out["row_sums"] = luab::to_numpy(std::move(row_sums));
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
        const agg::LabelColumns l = agg::label_columns(task, worker, label);
        const double* s = luab::finite_vector(skills, "skills", n_workers);
        luab::Buffer<double> shares;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l, n_tasks, n_workers, n_classes);
          shares = agg::weighted_vote_shares(c, s, in_runs, threads);
        }
        return luab::to_numpy(std::move(shares), {n_tasks, n_classes});
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("skills"), py::arg("in_runs") = false, py::arg("n_threads") = 0,
      "crowd-kit's MajorityVote(skills=...).probas_ as [T, K]: per task the skills behind each label, summed as "
      "pandas sums them (in_runs: the rows come sorted by (task, label)), divided by the row total (negative "
      "skills allowed).");
}
