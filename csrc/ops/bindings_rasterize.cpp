// luab_fast._C.ops.rasterize_traces: numpy in, numpy out; layouts checked here, values in the kernel,
// the GIL released around the splatting.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"
#include "ops/rasterize.hpp"

namespace py = pybind11;

namespace {

// The data of an array of the given shape, dtype T and C layout, checked in that order: "<name> must have shape
// (P, 2), got (3,)", "<name> must be float32, got dtype float64", "<name> must be C-contiguous".
template <typename T>
const T* checked(const py::array& a, const char* name, const std::vector<int64_t>& shape, const char* dtype) {
  luab::check_shape(a, name, shape);
  LUAB_CHECK(luab::has_dtype<T>(a), name, " must be ", dtype, ", got dtype ", luab::dtype_of(a));
  luab::check_c_contiguous(a, name);
  return static_cast<const T*>(a.data());
}

// A Python float as float32, beyond float32's range as +-inf (which the kernel's checks reject) rather than by
// an out-of-range conversion, which C++ leaves undefined.
float as_float(double v) {
  constexpr double kMax = std::numeric_limits<float>::max();
  if (v > kMax) return std::numeric_limits<float>::infinity();
  if (v < -kMax) return -std::numeric_limits<float>::infinity();
  return static_cast<float>(v);
}

py::array rasterize_py(const py::array& points, const py::array& times, const py::array& offsets,
                       const py::array& rows, const py::array& boxes, const py::array& flips, int64_t h, int64_t w,
                       double sigma, bool dwell, double dwell_cap_ms, const py::object& click_points,
                       const py::object& click_offsets, double click_mass, int normalize, int64_t n_threads) {
  LUAB_CHECK(points.ndim() == 2 && points.shape(1) == 2, "points must be [P, 2], got shape ", luab::shape_of(points));
  const int64_t P = points.shape(0);
  LUAB_CHECK(offsets.ndim() == 1 && offsets.shape(0) >= 1, "offsets must be [N + 1], got shape ",
             luab::shape_of(offsets));
  const int64_t N = offsets.shape(0) - 1;
  LUAB_CHECK(rows.ndim() == 1, "rows must be [B], got shape ", luab::shape_of(rows));
  const int64_t B = rows.shape(0);
  const int nt = luab::check_threads(n_threads);
  LUAB_CHECK(normalize >= 0 && normalize <= 2, "normalize must be 0 (none), 1 (sum) or 2 (max), got ", normalize);
  luab::ops::RasterizeArgs a{};
  a.points = checked<float>(points, "points", {P, 2}, "float32");
  a.times = checked<int64_t>(times, "times", {P}, "int64");
  a.offsets = checked<int64_t>(offsets, "offsets", {N + 1}, "int64");
  a.P = P;
  a.N = N;
  py::array cp, co;  // declared here: a converted array must outlive the kernel call
  LUAB_CHECK(click_points.is_none() == click_offsets.is_none(),
             "click_points and click_offsets must be given together (or both None)");
  if (!click_points.is_none()) {
    cp = py::cast<py::array>(click_points);
    co = py::cast<py::array>(click_offsets);
    LUAB_CHECK(cp.ndim() == 2 && cp.shape(1) == 2, "click points must be [Q, 2], got shape ", luab::shape_of(cp));
    a.Q = cp.shape(0);
    a.click_points = checked<float>(cp, "click points", {a.Q, 2}, "float32");
    a.click_offsets = checked<int64_t>(co, "click offsets", {N + 1}, "int64");
  }
  a.rows = checked<int64_t>(rows, "rows", {B}, "int64");
  a.boxes = checked<float>(boxes, "boxes", {B, 4}, "float32");
  a.flips = checked<uint8_t>(flips, "flips", {B}, "uint8 (bool)");
  a.B = B;
  a.H = h;
  a.W = w;
  a.sigma = as_float(sigma);
  a.dwell = dwell;
  a.dwell_cap_ms = as_float(dwell_cap_ms);
  a.click_mass = as_float(click_mass);
  a.normalize = static_cast<luab::ops::Normalize>(normalize);
  a.n_threads = nt;
  LUAB_CHECK(h >= 1 && w >= 1, "out_size must be >= 1, got (", h, ", ", w, ")");
  luab::checked_size("rows * h * w (the output)", {B, h, w}, sizeof(float));
  py::array_t<float> out({B, h, w});
  float* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    luab::ops::rasterize_traces(a, o);
  }
  return out;
}

}  // namespace

void init_ops_rasterize(py::module_& ops) {
  ops.def("rasterize_traces", &rasterize_py, py::arg("points"), py::arg("times"), py::arg("offsets"),
          py::arg("rows"), py::arg("boxes"), py::arg("flips"), py::arg("h"), py::arg("w"), py::arg("sigma"),
          py::arg("dwell"), py::arg("dwell_cap_ms"), py::arg("click_points") = py::none(),
          py::arg("click_offsets") = py::none(), py::arg("click_mass") = 1.0f, py::arg("normalize") = 1,
          py::arg("n_threads") = 0,
          "Gaussian splat of each row's trace points (and clicks) in its crop: points f32[P,2], times i64[P], "
          "offsets i64[N+1], rows i64[B], boxes f32[B,4], flips u8[B] -> f32[B,h,w].");
}
