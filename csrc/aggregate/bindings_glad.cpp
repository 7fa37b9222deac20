// luab_fast._C.aggregate.glad: GLAD's binding (aggregate/glad.hpp). Validates every array and argument (naming
// it), runs the whole EM with the GIL released (taken back only to call `progress`), returns numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <string>

#include "aggregate/crowd.hpp"
#include "aggregate/glad.hpp"
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
  LUAB_CHECK(a.ndim() == 1 && (n < 0 || a.shape(0) == n), name, " must have shape (", (n < 0 ? "n" :
             std::to_string(n)), ",), got ", luab::shape_of(a));
  return static_cast<const T*>(a.data());
}

// A float64 [n] array whose values are all finite (and >= 0 with nonnegative).
const double* finite_f64(const py::object& o, const char* name, int64_t n, bool nonnegative = false) {
  const py::array a = o.cast<py::array>();
  const double* p = vector_of<double>(a, name, n, "float64");
  for (int64_t i = 0; i < n; ++i)
    LUAB_CHECK(std::isfinite(p[i]) && (!nonnegative || p[i] >= 0.0), name, " must hold finite values",
               (nonnegative ? " >= 0" : ""), ", got ", p[i], " at index ", i);
  return p;
}

int checked_count(int64_t n, const char* name) {
  LUAB_CHECK(n >= 0 && n <= INT_MAX, name, " must be >= 0 (and <= ", INT_MAX, "), got ", n);
  return static_cast<int>(n);
}

template <typename T>
py::array_t<T> owned(std::vector<T>&& v) {
  auto* heap = new std::vector<T>(std::move(v));
  py::capsule owner(heap, [](void* p) { delete static_cast<std::vector<T>*>(p); });
  return py::array_t<T>({static_cast<py::ssize_t>(heap->size())}, heap->data(), owner);
}

}  // namespace

void init_aggregate_glad(py::module_& a) {
  a.def(
      "glad",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& label_prior, const py::array& alpha_mean, const py::array& beta_mean,
         const py::object& alpha_init, const py::object& beta_init, int64_t n_iter, double tol,
         int64_t m_step_max_iter, double m_step_tol, const py::object& progress, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::GladOptions opt;
        opt.n_iter = checked_count(n_iter, "n_iter");
        opt.m_step_max_iter = checked_count(m_step_max_iter, "m_step_max_iter");
        LUAB_CHECK(!std::isnan(tol), "tol must be a number, got NaN");
        LUAB_CHECK(!std::isnan(m_step_tol), "m_step_tol must be a number, got NaN");
        opt.tol = tol;
        opt.m_step_tol = m_step_tol;
        opt.n_threads = threads;
        LUAB_CHECK(n_classes >= 1, "n_classes must be >= 1, got ", n_classes);
        LUAB_CHECK(n_tasks >= 0, "n_tasks must be >= 0, got ", n_tasks);
        LUAB_CHECK(n_workers >= 0, "n_workers must be >= 0, got ", n_workers);
        LUAB_CHECK(progress.is_none() || PyCallable_Check(progress.ptr()), "progress must be None or callable");
        const int64_t n = task.ndim() == 1 ? task.shape(0) : -1;
        const int64_t* t = vector_of<int64_t>(task, "task", -1, "int64");
        const int64_t* w = vector_of<int64_t>(worker, "worker", n, "int64");
        const int64_t* l = vector_of<int64_t>(label, "label", n, "int64");
        agg::GladModel m;
        m.n_classes = n_classes;
        m.label_prior = finite_f64(label_prior, "label_prior", n_classes, true);
        m.alpha_mean = finite_f64(alpha_mean, "alpha_mean", n_workers);
        m.beta_mean = finite_f64(beta_mean, "beta_mean", n_tasks);
        m.alpha_init = alpha_init.is_none() ? nullptr : finite_f64(alpha_init, "alpha_init", n_workers);
        m.beta_init = beta_init.is_none() ? nullptr : finite_f64(beta_init, "beta_init", n_tasks);
        agg::GladProgress report;
        if (!progress.is_none()) {
          report = [&progress](int iteration, double q) {
            py::gil_scoped_acquire gil;
            progress(iteration, q);
          };
        }
        agg::GladResult r;
        {
          py::gil_scoped_release nogil;
          // label n_classes: a label outside the model's classes (crowd-kit: one that is not in labels_priors)
          const agg::Crowd c = agg::build_crowd(t, w, l, n, n_tasks, n_workers, n_classes + 1);
          r = agg::glad(c, m, opt, report);
        }
        py::dict out;
        double* post = r.post.release();
        py::capsule owner(post, [](void* p) { std::free(p); });
        out["post"] = py::array_t<double>({n_tasks, n_classes}, post, owner);
        out["alphas"] = owned(std::move(r.alphas));
        out["betas"] = owned(std::move(r.betas));
        out["loss_history"] = r.loss_history;
        out["n_iter"] = r.n_iter_run;
        out["n_evaluations"] = r.n_evaluations;
        return out;
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("label_prior"), py::arg("alpha_mean"), py::arg("beta_mean"),
      py::arg("alpha_init") = py::none(), py::arg("beta_init") = py::none(), py::arg("n_iter") = 100,
      py::arg("tol") = 1e-5, py::arg("m_step_max_iter") = 25, py::arg("m_step_tol") = 1e-2,
      py::arg("progress") = py::none(), py::arg("n_threads") = 0,
      "GLAD's EM in crowd-kit 1.4.2's order; labels in [0, n_classes], n_classes meaning a label outside the "
      "model's classes. progress(iteration, q), if given, is called at the start of each EM iteration.");
}
