// luab_fast._C.aggregate.mace: the MACE engine's binding (mace.hpp). Thin: validates every array and argument
// (naming it), releases the GIL around the fit, and returns numpy arrays that own their buffers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cmath>
#include <vector>

#include "aggregate/label_columns.hpp"
#include "aggregate/mace.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace agg = luab::aggregate;

namespace {

// Starting parameters are probabilities: finite and >= 0 (a NaN would come out as NaN posteriors).
const double* start_data(const py::array& a, const char* name, const std::vector<int64_t>& shape) {
  const double* p = luab::checked_array<double>(a, name, shape, "float64");
  luab::check_finite_nonnegative(p, a.size(), name, "probabilities");
  return p;
}

double finite(double x, const char* name) {
  LUAB_CHECK(std::isfinite(x), name, " must be finite, got ", x);
  return x;
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
        const agg::LabelColumns l = agg::label_columns(task, worker, label);
        const int64_t n_starts = spamming0.ndim() == 3 ? spamming0.shape(0) : -1;
        LUAB_CHECK(n_starts >= 1, "spamming0 must be [n_starts >= 1, n_workers, 2], got shape ",
                   luab::shape_of(spamming0));
        const double* s0 = start_data(spamming0, "spamming0", {n_starts, n_workers, 2});
        const double* th0 = start_data(thetas0, "thetas0", {n_starts, n_workers, n_classes});
        const int64_t* row = luab::checked_vector<int64_t>(theta_row, "theta_row", n_workers, "int64");
        const int64_t* col = luab::checked_vector<int64_t>(theta_col, "theta_col", n_classes, "int64");
        agg::MaceResult r;
        {
          py::gil_scoped_release nogil;
          const agg::Crowd c = agg::build_crowd(l, n_tasks, n_workers, n_classes);
          r = agg::mace(c, s0, th0, n_starts, row, col, opt);
        }
        py::dict out;
        out["spamming"] = luab::to_numpy(std::move(r.spamming), {n_workers, 2});
        out["thetas"] = luab::to_numpy(std::move(r.thetas), {n_workers, n_classes});
        out["probas"] = luab::to_numpy(std::move(r.probas), {n_tasks, n_classes});
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
