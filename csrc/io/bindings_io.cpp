// luab_fast._C.io: the CSV row formatter's binding (csv_rows.hpp). Validates the arrays (naming them), formats
// without the GIL, returns bytes the caller writes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"
#include "io/csv_rows.hpp"

namespace py = pybind11;

void init_io(py::module_& io) {
  io.def(
      "csv_rows",
      [](const std::vector<std::string>& ids, const py::array& values, int64_t n_threads) {
        const int threads = luab::check_threads(n_threads);
        const float* v = luab::checked_array<float>(values, "values", {-1, -1}, "float32");
        const int64_t n = values.shape(0), k = values.shape(1);
        LUAB_CHECK(static_cast<int64_t>(ids.size()) == n, "ids must hold one id per row of values (", n, "), got ",
                   ids.size());
        std::string out;
        {
          py::gil_scoped_release nogil;
          out = luab::io::csv_rows(ids, v, n, k, threads);
        }
        return py::bytes(out);
      },
      py::arg("ids"), py::arg("values"), py::arg("n_threads") = 0,
      "The CSV lines '<id>,<v0>,...' of ids [n] (str) and values float32 [n, k] (C-contiguous), as bytes: each "
      "value the shortest decimal that reads back as the same float32; ids holding a comma, quote or line break "
      "quoted.");
}
