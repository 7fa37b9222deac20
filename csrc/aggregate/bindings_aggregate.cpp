// luab_fast._C.aggregate: the EM label-aggregation engine's bindings. Thin: validates every array (dtype, layout,
// shape, naming the argument), releases the GIL around the compiled work, and hands results back as numpy arrays
// that own their buffers (no copies).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregate/bayes.hpp"
#include "aggregate/crowd.hpp"
#include "aggregate/dawid_skene.hpp"
#include "aggregate/ds_m_step.hpp"
#include "aggregate/em_kernels.hpp"
#include "aggregate/encode.hpp"
#include "aggregate/label_columns.hpp"
#include "aggregate/majority_vote.hpp"
#include "common/buffer.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

namespace {

using luab::check_finite_nonnegative;
using luab::checked_array;
using luab::shape_of;
using luab::to_numpy;

// An optional float64 array of the given shape whose values are finite and >= 0, held in `holder` for the call.
const double* optional_f64(const py::object& o, py::array& holder, const char* name, const std::vector<int64_t>& shape,
                           const char* what) {
  if (!luab::optional_array(o, holder)) return nullptr;
  const double* p = checked_array<double>(holder, name, shape, "float64");
  check_finite_nonnegative(p, static_cast<int64_t>(holder.size()), name, what);
  return p;
}

// Builds the CSR views from the three label columns (ids already dense, checked in C++ too).
// task_view_only: the task view alone (build_task_view), for work that reads labels task by task only.
agg::Crowd make_crowd(const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks,
                      int64_t n_workers, int64_t n_classes, bool confusion_tables = false,
                      bool task_view_only = false, int n_threads = 1) {
  const agg::LabelColumns l = agg::label_columns(task, worker, label);
  py::gil_scoped_release nogil;
  if (task_view_only)
    return agg::build_task_view(l.task, l.worker, l.label, l.n, n_tasks, n_workers, n_classes, n_threads);
  return agg::build_crowd(l, n_tasks, n_workers, n_classes, confusion_tables);
}

// alpha may be [K, K] (shared by all workers) or [W, K, K]; returns whether it is per worker.
// Its values must be finite pseudo-counts >= 0.
bool alpha_layout(const py::array& a, int64_t W, int64_t K, const char* name) {
  const bool per_worker = a.ndim() == 3;
  const double* p = per_worker ? checked_array<double>(a, name, {W, K, K}, "float64")
                               : checked_array<double>(a, name, {K, K}, "float64");
  check_finite_nonnegative(p, static_cast<int64_t>(a.size()), name, "pseudo-counts");
  return per_worker;
}

// An optional int64 [n_tasks] of reference classes (>= n_classes: no class) or -1 (none), held in `holder` for the
// call (a cast may have made a new array).
const int64_t* optional_reference(const py::object& o, int64_t n_tasks, py::array& holder) {
  if (!luab::optional_array(o, holder)) return nullptr;
  const int64_t* ref = checked_array<int64_t>(holder, "reference", {n_tasks}, "int64");
  for (int64_t t = 0; t < n_tasks; ++t)
    LUAB_CHECK(ref[t] >= -1, "reference must hold class indices (or >= n_classes: no class), or -1 for none, got ",
               ref[t], " at task ", t);
  return ref;
}

// An optional permutation of 0..n_classes-1 (crowd-kit's column order, for ties), held in `holder` for the call.
const int64_t* optional_order(const py::object& o, int64_t n_classes, py::array& holder) {
  if (!luab::optional_array(o, holder)) return nullptr;
  const int64_t* ord = checked_array<int64_t>(holder, "order", {n_classes}, "int64");
  std::vector<uint8_t> seen(static_cast<size_t>(n_classes), 0);
  for (int64_t k = 0; k < n_classes; ++k) {
    LUAB_CHECK(ord[k] >= 0 && ord[k] < n_classes && !seen[ord[k]], "order must be a permutation of 0..",
               n_classes - 1, ", got ", ord[k], " at position ", k);
    seen[ord[k]] = 1;
  }
  return ord;
}

// Runs f() with the GIL released (the compiled work touches no Python object) and returns its result.
template <typename F>
auto without_gil(F&& f) {
  py::gil_scoped_release nogil;
  return f();
}

}  // namespace

void init_aggregate(py::module_& a) {
  a.def(
      "factorize_integers",
      [](const py::array& values, bool sorted) -> py::object {
        const int64_t n = values.ndim() == 1 ? values.shape(0) : -1;
        const int64_t* v = checked_array<int64_t>(values, "values", {-1}, "int64");
        luab::Buffer<int64_t> codes(static_cast<size_t>(n), luab::Uninitialized{});  // every code gets written
        std::vector<int64_t> uniques;
        bool ok;
        {
          py::gil_scoped_release nogil;
          ok = agg::factorize_integers(v, n, sorted, codes.data(), uniques);
        }
        if (!ok) return py::none();
        const auto u = static_cast<py::ssize_t>(uniques.size());
        return py::make_tuple(to_numpy(std::move(codes), {n}), to_numpy(std::move(uniques), {u}));
      },
      py::arg("values"), py::arg("sorted") = false,
      "(codes, uniques) of int64 ids, uniques in order of first appearance (or ascending with sorted=True); "
      "None when the ids span too wide a range for a direct table (use a hash instead).");

  a.def(
      "factorize_integer_columns",
      [](const std::vector<py::array>& columns, const std::vector<bool>& sorted, int64_t n_threads) -> py::list {
        const int threads = luab::check_threads(n_threads);
        LUAB_CHECK(sorted.size() == columns.size(), "sorted must hold one flag per column (", columns.size(),
                   "), got ", sorted.size());
        const size_t m = columns.size();
        std::vector<const int64_t*> v(m);
        std::vector<int64_t> n(m);
        std::vector<luab::Buffer<int64_t>> codes;
        for (size_t i = 0; i < m; ++i) {
          const std::string name = "columns[" + std::to_string(i) + "]";
          v[i] = checked_array<int64_t>(columns[i], name.c_str(), {-1}, "int64");
          n[i] = columns[i].shape(0);
          codes.emplace_back(static_cast<size_t>(n[i]), luab::Uninitialized{});  // every code gets written
        }
        std::vector<std::vector<int64_t>> uniques(m);
        std::vector<uint8_t> ok(m, 0);
        {
          py::gil_scoped_release nogil;
          // a column a thread: each factorisation is one sequential pass (first appearance decides the codes)
          const int nt = static_cast<int>(std::min<size_t>(m, static_cast<size_t>(luab::threads_or_default(threads))));
          luab::FirstError err;
#pragma omp parallel for num_threads(std::max(nt, 1)) schedule(dynamic, 1)
          for (int64_t i = 0; i < static_cast<int64_t>(m); ++i)
            err.run([&] { ok[i] = agg::factorize_integers(v[i], n[i], sorted[i], codes[i].data(), uniques[i]); });
          err.rethrow();
        }
        py::list out;
        for (size_t i = 0; i < m; ++i) {
          if (!ok[i]) {
            out.append(py::none());
            continue;
          }
          const auto u = static_cast<py::ssize_t>(uniques[i].size());
          out.append(py::make_tuple(to_numpy(std::move(codes[i]), {n[i]}), to_numpy(std::move(uniques[i]), {u})));
        }
        return out;
      },
      py::arg("columns"), py::arg("sorted"), py::arg("n_threads") = 0,
      "factorize_integers of several int64 columns at once, a column a thread: a list of (codes, uniques) or None.");

  a.def(
      "argmax_rows",
      [](const py::array& x, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        LUAB_CHECK(x.ndim() == 2, "x must be 2-D (rows, classes), got shape ", shape_of(x));
        const int64_t rows = x.shape(0), k = x.shape(1);
        LUAB_CHECK(k >= 1, "x must have at least one column, got shape ", shape_of(x));
        std::vector<int64_t> out(static_cast<size_t>(rows));
        const int nt = agg::resolve_threads(threads, rows * k);
        if (py::array_t<float>::check_(x)) {
          const float* p = checked_array<float>(x, "x", {rows, k}, "float32");
          py::gil_scoped_release nogil;
          agg::argmax_rows(p, rows, k, out.data(), nt);
        } else {
          const double* p = checked_array<double>(x, "x", {rows, k}, "float64 or float32");
          py::gil_scoped_release nogil;
          agg::argmax_rows(p, rows, k, out.data(), nt);
        }
        return to_numpy(std::move(out), {rows});
      },
      py::arg("x"), py::arg("n_threads") = 0,
      "First index of each row's maximum (numpy.argmax(x, axis=1) for NaN-free rows), OpenMP-parallel.");

  a.def(
      "majority_vote",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::object& weights, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes);
        py::array weights_arr;  // held for the call
        const double* wts = optional_f64(weights, weights_arr, "weights", {n_workers}, "vote weights");
        luab::Buffer<double> post;
        {
          py::gil_scoped_release nogil;
          post = agg::majority_vote(c, wts, threads);
        }
        return to_numpy(std::move(post), {n_tasks, n_classes});
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("weights") = py::none(), py::arg("n_threads") = 0,
      "Vote shares [T, K]; tasks without votes get the uniform distribution.");

  a.def(
      "crowdkit_vote",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::object& weights, const py::object& order, bool shares, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes, false, true, threads);
        const double* wts = nullptr;
        py::array weights_arr, order_arr;  // held for the call: a cast may have made a new array
        // any number but NaN: crowd-kit sums negative and infinite skills as given
        if (luab::optional_array(weights, weights_arr)) {
          wts = checked_array<double>(weights_arr, "weights", {n_workers}, "float64");
          for (int64_t w = 0; w < n_workers; ++w)
            LUAB_CHECK(!std::isnan(wts[w]), "weights must not be NaN, got NaN at worker ", w);
        }
        const int64_t* ord = optional_order(order, n_classes, order_arr);
        luab::checked_size("n_tasks * n_classes", {n_tasks, n_classes});
        luab::Buffer<double> post(shares ? n_tasks * n_classes : 0, luab::Uninitialized{});
        std::vector<int64_t> labels(static_cast<size_t>(n_tasks));
        const int64_t undefined = without_gil([&] {
          // labels alone read a few classes per task (see crowdkit_vote); the shares write all T × K
          const int nt = agg::resolve_threads(threads, shares ? c.n_labels + n_tasks * n_classes : c.n_labels);
          return agg::crowdkit_vote(c, wts, ord, nt, shares ? post.data() : nullptr, labels.data());
        });
        py::object shares_out = py::none();
        if (shares) shares_out = to_numpy(std::move(post), {n_tasks, n_classes});
        return py::make_tuple(shares_out, to_numpy(std::move(labels), {n_tasks}), undefined);
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("weights") = py::none(), py::arg("order") = py::none(), py::arg("shares") = true,
      py::arg("n_threads") = 0,
      "crowd-kit 1.4.2's (weighted) majority vote to the bit: (shares [T, K] or None, labels [T] (-1 where every "
      "share is NaN), the number of such tasks). order: the classes in crowd-kit's column order, for ties.");

  a.def(
      "worker_accuracy",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::object& reference, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes, false, true, threads);
        py::array reference_arr;
        LUAB_CHECK(!reference.is_none(), "reference must be an int64 array of n_tasks classes, got None");
        const int64_t* ref = optional_reference(reference, n_tasks, reference_arr);
        std::vector<double> hits(static_cast<size_t>(n_workers)), counted(static_cast<size_t>(n_workers));
        without_gil([&] {
          const int nt = agg::resolve_threads(threads, c.n_labels);
          const std::vector<uint8_t> first = agg::first_answers(c, nt);
          agg::worker_accuracy(c, ref, first.data(), hits.data(), counted.data(), nt);
          return 0;
        });
        return py::make_tuple(to_numpy(std::move(hits), {n_workers}), to_numpy(std::move(counted), {n_workers}));
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("reference"), py::arg("n_threads") = 0,
      "crowd-kit 1.4.2's get_accuracy per worker: (hits [W], counted [W]) over each worker's distinct (task, label) "
      "answers on tasks with reference >= 0.");

  a.def(
      "skill_weighted_vote",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::object& reference, const py::object& order, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes, false, true, threads);
        py::array reference_arr, order_arr;  // held for the call
        const int64_t* ref = optional_reference(reference, n_tasks, reference_arr);
        const int64_t* ord = optional_order(order, n_classes, order_arr);
        agg::SkillVote r = without_gil([&] {
          return agg::skill_weighted_vote(c, ref, ord, agg::resolve_threads(threads, c.n_labels));
        });
        const bool voted = !r.labels.empty() || n_tasks == 0;
        py::object labels_out = py::none();
        if (voted) labels_out = to_numpy(std::move(r.labels), {n_tasks});
        return py::make_tuple(to_numpy(std::move(r.hits), {n_workers}), to_numpy(std::move(r.counted), {n_workers}),
                              labels_out, r.undefined);
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("reference") = py::none(), py::arg("order") = py::none(),
      py::arg("n_threads") = 0,
      "crowd-kit 1.4.2's Wawa (reference None: the plain vote, ties in `order`) or GoldMajorityVote (reference: the "
      "gold class per task, -1 for none) fit_predict: (hits [W], counted [W], the skill-weighted vote's labels [T] "
      "or None when a worker has no skill, the number of tasks it labels -1).");

  a.def(
      "confusion_counts",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& post, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes, true);
        const double* p = checked_array<double>(post, "post", {n_tasks, n_classes}, "float64");
        check_finite_nonnegative(p, n_tasks * n_classes, "post", "probabilities");
        luab::Buffer<double> counts(n_workers * n_classes * n_classes, luab::Uninitialized{});
        without_gil([&] {
          agg::soft_confusion_counts(c, p, counts.data(), agg::resolve_threads(threads, c.n_labels * n_classes));
          return 0;
        });
        return to_numpy(std::move(counts), {n_workers, n_classes, n_classes});
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("post"), py::arg("n_threads") = 0,
      "Expected counts [W, z, y] = sum over worker w's labels z of post[task, y].");

  a.def(
      "dawid_skene",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::object& init_post, const py::object& alpha, const py::object& task_prior,
         int64_t n_iter, double tol, bool one_coin, bool single_precision, int64_t n_threads,
         const py::object& init_theta, const py::object& gold) {
        const int threads = luab::check_threads(n_threads);
        const int iters = luab::checked_count(n_iter, "n_iter");
        // any threshold but NaN: EM stops once the objective gains less than tol (a negative tol waits for a drop)
        LUAB_CHECK(!std::isnan(tol), "tol must be a number, got NaN");
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes, !one_coin);
        agg::DSStart start;
        py::array post_arr, theta_arr, gold_arr, prior_arr, alpha_arr;  // held for the call
        start.post = optional_f64(init_post, post_arr, "init_post", {n_tasks, n_classes}, "probabilities");
        start.theta = optional_f64(init_theta, theta_arr, "init_theta", {n_workers, n_classes, n_classes},
                                   "probabilities");
        if (luab::optional_array(gold, gold_arr))
          start.gold = checked_array<int64_t>(gold_arr, "gold", {n_tasks}, "int64");
        const double* tp = optional_f64(task_prior, prior_arr, "task_prior", {n_tasks, n_classes}, "probabilities");
        const double* al = nullptr;
        bool per_worker = false;
        if (luab::optional_array(alpha, alpha_arr)) {
          if (one_coin) {
            al = checked_array<double>(alpha_arr, "alpha", {2}, "float64");
            check_finite_nonnegative(al, 2, "alpha", "pseudo-counts");
          } else {
            per_worker = alpha_layout(alpha_arr, n_workers, n_classes, "alpha");
            al = static_cast<const double*>(alpha_arr.data());
          }
        }
        const agg::DSOptions opt{iters, tol, one_coin, single_precision, threads};  // in the struct's order
        agg::DSResult r = without_gil([&] { return agg::dawid_skene(c, start, al, per_worker, tp, opt); });
        py::dict out;
        if (single_precision) {
          out["post"] = to_numpy(std::move(r.post_f32), {n_tasks, n_classes});
        } else {
          out["post"] = to_numpy(std::move(r.post), {n_tasks, n_classes});
        }
        out["class_prior"] = to_numpy(std::move(r.class_prior), {n_classes});
        if (one_coin) {
          out["theta"] = py::none();  // two numbers per worker: rebuilt from the skills on demand
        } else if (single_precision) {
          out["theta"] = to_numpy(std::move(r.theta_f32), {n_workers, n_classes, n_classes});
        } else {
          out["theta"] = to_numpy(std::move(r.theta), {n_workers, n_classes, n_classes});
        }
        out["skills"] = to_numpy(std::move(r.skills), {static_cast<py::ssize_t>(one_coin ? n_workers : 0)});
        out["loss_history"] = r.loss_history;
        out["n_iter"] = r.n_iter_run;
        return out;
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("init_post") = py::none(), py::arg("alpha") = py::none(),
      py::arg("task_prior") = py::none(),
      py::arg("n_iter") = 100, py::arg("tol") = 1e-5, py::arg("one_coin") = false,
      py::arg("single_precision") = false, py::arg("n_threads") = 0, py::arg("init_theta") = py::none(),
      py::arg("gold") = py::none(),
      "Soft-EM Dawid–Skene in crowd-kit's order. theta is [W, z, y] = p(z | y, w). init_theta [W, z, y]: used "
      "instead of the first M-step; gold [T]: class index (or -1) whose one-hot row a task keeps (full model only).");

  a.def(
      "bayes",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& alpha, const py::object& task_prior, const py::object& init_post,
         int64_t max_iter, bool hard_criterion, double likelihood_epsilon, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        const int iters = luab::checked_count(max_iter, "max_iter");
        LUAB_CHECK(likelihood_epsilon >= 0.0, "likelihood_epsilon must be >= 0, got ", likelihood_epsilon);
        agg::Crowd c = make_crowd(task, worker, label, n_tasks, n_workers, n_classes, true);
        const bool per_worker = alpha_layout(alpha, n_workers, n_classes, "alpha");
        const double* al = static_cast<const double*>(alpha.data());
        py::array prior_arr, post_arr;  // held for the call
        const double* tp = optional_f64(task_prior, prior_arr, "task_prior", {n_tasks, n_classes}, "probabilities");
        const double* init = optional_f64(init_post, post_arr, "init_post", {n_tasks, n_classes}, "probabilities");
        const agg::BayesOptions opt{iters, hard_criterion, likelihood_epsilon, threads};  // in the struct's order
        agg::BayesResult r = without_gil([&] { return agg::bayes_aggregate(c, al, per_worker, tp, init, opt); });
        py::dict out;
        out["post"] = to_numpy(std::move(r.post), {n_tasks, n_classes});
        out["counts"] = to_numpy(std::move(r.counts), {n_workers, n_classes, n_classes});
        out["theta"] = to_numpy(std::move(r.theta), {n_workers, n_classes, n_classes});
        out["z_likelihood"] = r.z_likelihood;
        out["n_iter"] = r.n_iter_run;
        out["converged"] = r.converged;
        out["n_decreases"] = r.n_decreases;
        return out;
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("alpha"), py::arg("task_prior") = py::none(), py::arg("init_post") = py::none(),
      py::arg("max_iter") = 10, py::arg("hard_criterion") = false, py::arg("likelihood_epsilon") = 1e-3,
      py::arg("n_threads") = 0,
      "The seed's hard-EM Bayes aggregator. counts and theta are [W, z, y].");
}
