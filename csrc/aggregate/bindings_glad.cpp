// luab_fast._C.aggregate.glad: GLAD's binding (aggregate/glad.hpp). Validates every array and argument (naming
// it), runs the whole EM with the GIL released (taken back only to call `progress`), returns numpy arrays.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>

#include "aggregate/glad.hpp"
#include "aggregate/label_columns.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

void init_aggregate_glad(py::module_& a) {
  a.def(
      "glad",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& label_prior, const py::array& alpha_mean, const py::array& beta_mean,
         const py::object& alpha_init, const py::object& beta_init, int64_t n_iter, double tol,
         int64_t m_step_max_iter, double m_step_tol, const py::object& progress, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        agg::GladOptions opt;
        opt.n_iter = luab::checked_count(n_iter, "n_iter");
        opt.m_step_max_iter = luab::checked_count(m_step_max_iter, "m_step_max_iter");
        LUAB_CHECK(!std::isnan(tol), "tol must be a number, got NaN");
        LUAB_CHECK(!std::isnan(m_step_tol), "m_step_tol must be a number, got NaN");
        opt.tol = tol;
        opt.m_step_tol = m_step_tol;
        opt.n_threads = threads;
        LUAB_CHECK(n_classes >= 1, "n_classes must be >= 1, got ", n_classes);
        LUAB_CHECK(n_tasks >= 0, "n_tasks must be >= 0, got ", n_tasks);
        LUAB_CHECK(n_workers >= 0, "n_workers must be >= 0, got ", n_workers);
        LUAB_CHECK(progress.is_none() || PyCallable_Check(progress.ptr()), "progress must be None or callable");
        const agg::LabelColumns l = agg::label_columns(task, worker, label);
        agg::GladModel m;
        m.n_classes = n_classes;
        m.label_prior = luab::finite_vector(label_prior, "label_prior", n_classes, true);
        m.alpha_mean = luab::finite_vector(alpha_mean, "alpha_mean", n_workers);
        m.beta_mean = luab::finite_vector(beta_mean, "beta_mean", n_tasks);
        py::array alpha_init_arr, beta_init_arr;  // held for the call
        m.alpha_init = luab::optional_array(alpha_init, alpha_init_arr)
                           ? luab::finite_vector(alpha_init_arr, "alpha_init", n_workers) : nullptr;
        m.beta_init = luab::optional_array(beta_init, beta_init_arr)
                          ? luab::finite_vector(beta_init_arr, "beta_init", n_tasks) : nullptr;
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
          const agg::Crowd c = agg::build_crowd(l, n_tasks, n_workers, n_classes + 1);
          r = agg::glad(c, m, opt, report);
        }
        py::dict out;
        out["post"] = luab::to_numpy(std::move(r.post), {n_tasks, n_classes});
        out["alphas"] = luab::to_numpy(std::move(r.alphas));
        out["betas"] = luab::to_numpy(std::move(r.betas));
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
