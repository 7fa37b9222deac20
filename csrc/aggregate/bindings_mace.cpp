// luab_fast._C.aggregate.mace: the MACE engine's binding (mace.hpp). Thin: validates every array and argument
// (naming it), releases the GIL around the fit, and returns numpy arrays that own their buffers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "aggregate/crowd.hpp"
#include "aggregate/mace.hpp"
#include "common/buffer.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

namespace {

// The data of a C-contiguous array of dtype T and the given shape (-1: any length), else ValueError naming it.
template <typename T>
const T* array_data(const py::array& a, const char* name, const std::vector<int64_t>& shape, const char* dtype) {
  LUAB_CHECK(a.dtype().is(py::dtype::of<T>()), name, " must be a ", dtype, " array, got dtype ", luab::dtype_of(a));
  LUAB_CHECK(a.flags() & py::array::c_style, name, " must be C-contiguous");
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t d = 0; ok && d < shape.size(); ++d) ok = shape[d] < 0 || a.shape(d) == shape[d];
  if (!ok) {
    std::string want = "(";
    for (size_t d = 0; d < shape.size(); ++d)
      want += (d ? ", " : "") + (shape[d] < 0 ? std::string("n") : std::to_string(shape[d]));
    LUAB_CHECK(false, name, " must have shape ", want, (shape.size() == 1 ? ",)" : ")"), ", got ",
               luab::shape_of(a));
  }
  return static_cast<const T*>(a.data());
}

// Starting parameters are probabilities: finite and >= 0 (a NaN would come out as NaN posteriors).
const double* start_data(const py::array& a, const char* name, const std::vector<int64_t>& shape) {
  const double* p = array_data<double>(a, name, shape, "float64");
  for (py::ssize_t i = 0; i < a.size(); ++i)
    LUAB_CHECK(std::isfinite(p[i]) && p[i] >= 0.0, name, " must hold finite probabilities >= 0, got ", p[i],
               " at flat index ", i);
  return p;
}

double finite(double x, const char* name) {
  LUAB_CHECK(std::isfinite(x), name, " must be finite, got ", x);
  return x;
}

template <typename T>
py::array_t<T> to_numpy(luab::Buffer<T>&& b, std::vector<py::ssize_t> shape) {
  T* p = b.release();
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array_t<T>(shape, p, owner);
}

}  // namespace

void init_aggregate_mace(py::module_& a) {
  a.def(
      "mace",
      [](const py::array& task, const py::array& worker, const py::array& label, int64_t n_tasks, int64_t n_workers,
         int64_t n_classes, const py::array& spamming0, const py::array& thetas0, const py::array& theta_row,
         const py::array& theta_col, int64_t n_iter, bool variational, double smoothing, double alpha, double beta,
         double strategy_prior, int64_t n_threads) {
        agg::MaceOptions opt;
        opt.n_threads = luab::check_threads(n_threads);
        LUAB_CHECK(n_iter >= 0 && n_iter <= INT_MAX, "n_iter must be in 0..", INT_MAX, ", got ", n_iter);
        opt.n_iter = static_cast<int>(n_iter);
        opt.variational = variational;
        opt.smoothing = finite(smoothing, "smoothing");
        opt.alpha = finite(alpha, "alpha");
        opt.beta = finite(beta, "beta");
        opt.strategy_prior = finite(strategy_prior, "strategy_prior");
        const int64_t n = task.ndim() == 1 ? task.shape(0) : -1;
        const int64_t* t = array_data<int64_t>(task, "task", {-1}, "int64");
        const int64_t* w = array_data<int64_t>(worker, "worker", {n}, "int64");
        const int64_t* l = array_data<int64_t>(label, "label", {n}, "int64");
        const int64_t n_starts = spamming0.ndim() == 3 ? spamming0.shape(0) : -1;
        LUAB_CHECK(n_starts >= 1, "spamming0 must be [n_starts >= 1, n_workers, 2], got shape ",
                   luab::shape_of(spamming0));
        const double* s0 = start_data(spamming0, "spamming0", {n_starts, n_workers, 2});
        const double* th0 = start_data(thetas0, "thetas0", {n_starts, n_workers, n_classes});
        const int64_t* row = array_data<int64_t>(theta_row, "theta_row", {n_workers}, "int64");
        const int64_t* col = array_data<int64_t>(theta_col, "theta_col", {n_classes}, "int64");
        agg::MaceResult r;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(t, w, l, n, n_tasks, n_workers, n_classes);
          r = agg::mace(c, s0, th0, n_starts, row, col, opt);
        }
        py::dict out;
        out["spamming"] = to_numpy(std::move(r.spamming), {n_workers, 2});
        out["thetas"] = to_numpy(std::move(r.thetas), {n_workers, n_classes});
        out["probas"] = to_numpy(std::move(r.probas), {n_tasks, n_classes});
        out["log_likelihood"] = r.log_likelihood;
        out["best"] = r.best;
        return out;
      },
      py::arg("task"), py::arg("worker"), py::arg("label"), py::arg("n_tasks"), py::arg("n_workers"),
      py::arg("n_classes"), py::arg("spamming0"), py::arg("thetas0"), py::arg("theta_row"), py::arg("theta_col"),
      py::arg("n_iter") = 50, py::arg("variational") = true, py::arg("smoothing") = 0.0, py::arg("alpha") = 0.5,
      py::arg("beta") = 0.5, py::arg("strategy_prior") = 10.0, py::arg("n_threads") = 0,
      "MACE as crowd-kit 1.4.2 fits it, from the given starts (spamming0 [R, W, 2], thetas0 [R, W, K]). Keys: "
      "spamming [W, 2], thetas [W, K] of the best start, probas [T, K] under them, log_likelihood (one per "
      "start), best (its index).");
}
