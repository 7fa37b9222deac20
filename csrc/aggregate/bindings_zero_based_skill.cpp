// luab_fast._C.aggregate.zero_based_skill: the Zero-Based Skill engine's binding (zero_based_skill.hpp). Thin:
// validates every array and argument (naming it), releases the GIL around the fit, returns the skills as numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>

#include "aggregate/label_columns.hpp"
#include "aggregate/zero_based_skill.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

void init_aggregate_zero_based_skill(py::module_& a) {
  a.def(
      "zero_based_skill",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& skills, int64_t n_iter, double lr_init, int64_t lr_steps_to_reduce,
         double lr_reduce_factor, bool predict, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        const int iters = luab::checked_count(n_iter, "n_iter");
        LUAB_CHECK(lr_steps_to_reduce != 0, "lr_steps_to_reduce must not be 0");
        const agg::LabelColumns l = agg::label_columns(task, worker, label);
        const double* start = luab::checked_vector<double>(skills, "skills", n_workers, "float64");
        py::array_t<double> out(static_cast<py::ssize_t>(n_workers));
        std::copy(start, start + n_workers, out.mutable_data());
        py::array_t<int64_t> labels(static_cast<py::ssize_t>(predict ? n_tasks : 0));
        const agg::ZBSOptions opt{iters, lr_init, lr_steps_to_reduce, lr_reduce_factor, threads};
        double* fitted = out.mutable_data();
        int64_t* predicted = predict ? labels.mutable_data() : nullptr;
        int64_t undefined;
        {
          py::gil_scoped_release nogil;
          // votes and accuracies read labels task by task: the task view alone
          const agg::Crowd c = agg::build_task_view(l.task, l.worker, l.label, l.n, n_tasks, n_workers, n_classes,
                                                    threads);
          undefined = agg::zero_based_skill(c, fitted, opt, predicted);
        }
        py::object predicted_labels = py::none();
        if (predict) predicted_labels = labels;
        return py::make_tuple(out, predicted_labels, undefined);
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("skills"), py::arg("n_iter") = 100, py::arg("lr_init") = 1.0,
      py::arg("lr_steps_to_reduce") = 20, py::arg("lr_reduce_factor") = 0.5, py::arg("predict") = false,
      py::arg("n_threads") = 0,
      "crowd-kit 1.4.2's Zero-Based Skill: (the workers' skills [W] after n_iter steps from the given start; with "
      "predict, the labels [T] of the vote they weight (-1: every share NaN) and the number of such tasks, else "
      "None and 0).");
}
