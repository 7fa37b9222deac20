// luab_fast._C.aggregate.zero_based_skill: the Zero-Based Skill engine's binding (zero_based_skill.hpp). Thin:
// validates every array and argument (naming it), releases the GIL around the fit, returns the skills as numpy.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "aggregate/crowd.hpp"
#include "aggregate/zero_based_skill.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

namespace {

// The data of a C-contiguous 1-D array of dtype T and length n (n < 0: any), else ValueError naming it.
template <typename T>
const T* vector_data(const py::array& a, const char* name, int64_t n, const char* dtype) {
  // equivalent dtypes, not the same dtype object: an unpickled array's int64 is a dtype of its own
  LUAB_CHECK(py::array_t<T>::check_(a), name, " must be a ", dtype, " array, got dtype ", luab::dtype_of(a));
  LUAB_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous");
  LUAB_CHECK(a.ndim() == 1 && (n < 0 || a.shape(0) == n), name, " must have shape (", (n < 0 ? "n" : std::to_string(n)),
             ",), got ", luab::shape_of(a));
  return static_cast<const T*>(a.data());
}

}  // namespace

void init_aggregate_zero_based_skill(py::module_& a) {
  a.def(
      "zero_based_skill",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& skills, int64_t n_iter, double lr_init, int64_t lr_steps_to_reduce,
         double lr_reduce_factor, bool predict, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        LUAB_CHECK(n_iter >= 0 && n_iter <= INT_MAX, "n_iter must be >= 0 (and <= ", INT_MAX, "), got ", n_iter);
        LUAB_CHECK(lr_steps_to_reduce != 0, "lr_steps_to_reduce must not be 0");
        const int64_t n = task.ndim() == 1 ? task.shape(0) : -1;
        const int64_t* t = vector_data<int64_t>(task, "task", -1, "int64");
        const int64_t* w = vector_data<int64_t>(worker, "worker", n, "int64");
        const int64_t* l = vector_data<int64_t>(label, "label", n, "int64");
        const double* start = vector_data<double>(skills, "skills", n_workers, "float64");
        py::array_t<double> out(static_cast<py::ssize_t>(n_workers));
        std::copy(start, start + n_workers, out.mutable_data());
        py::array_t<int64_t> labels(static_cast<py::ssize_t>(predict ? n_tasks : 0));
        const agg::ZBSOptions opt{static_cast<int>(n_iter), lr_init, lr_steps_to_reduce, lr_reduce_factor, threads};
        double* fitted = out.mutable_data();
        int64_t* predicted = predict ? labels.mutable_data() : nullptr;
        int64_t undefined;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(t, w, l, n, n_tasks, n_workers, n_classes);
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
