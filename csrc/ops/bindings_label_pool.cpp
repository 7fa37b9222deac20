// luab_fast._C.ops.label_pool: numpy in, numpy out; validates layouts here and values in the kernel,
// and releases the GIL around the pooling.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>

#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"
#include "ops/label_pool.hpp"

namespace py = pybind11;

namespace {

using luab::dtype_of;
using luab::shape_of;

py::array label_pool_py(const py::array& scores, const py::array& indices, const py::array& boxes,
                        int64_t num_classes, int64_t out_h, int64_t out_w, bool legacy, bool softmax,
                        int64_t n_threads) {
  const int nt = luab::check_threads(n_threads);
  LUAB_CHECK(scores.ndim() == 4, "scores must be [B, K, S, S], got shape ", shape_of(scores));
  LUAB_CHECK(luab::has_dtype<float>(scores), "scores must be float32, got dtype ", dtype_of(scores));
  luab::check_c_contiguous(scores, "scores");
  const int64_t B = scores.shape(0), K = scores.shape(1), S = scores.shape(2);
  LUAB_CHECK(scores.shape(3) == S, "scores must be [B, K, S, S] (square map), got shape ", shape_of(scores));
  LUAB_CHECK(indices.ndim() == 4 && indices.shape(0) == B && indices.shape(1) == K && indices.shape(2) == S &&
                 indices.shape(3) == S,
             "indices must have the shape of scores ", shape_of(scores), ", got ", shape_of(indices));
  const int ib = static_cast<int>(indices.itemsize());
  const char kind = indices.dtype().kind();
  LUAB_CHECK(kind == 'i' && (ib == 2 || ib == 4 || ib == 8), "indices must be int16, int32 or int64, got dtype ",
             dtype_of(indices));
  // a byte-swapped array would be read as other (possibly in-range) class ids: a silently wrong result
  LUAB_CHECK(indices.dtype().attr("isnative").cast<bool>(), "indices must be in the machine's byte order, got dtype ",
             dtype_of(indices), "; convert with indices.astype(indices.dtype.newbyteorder('='))");
  luab::check_c_contiguous(indices, "indices");
  LUAB_CHECK(boxes.ndim() == 2 && boxes.shape(0) == B && boxes.shape(1) == 4, "boxes must be [B=", B,
             ", 4], got shape ", shape_of(boxes));
  LUAB_CHECK(luab::has_dtype<float>(boxes), "boxes must be float32, got dtype ", dtype_of(boxes));
  luab::check_c_contiguous(boxes, "boxes");
  LUAB_CHECK(num_classes >= 1, "num_classes must be >= 1, got ", num_classes);
  LUAB_CHECK(out_h >= 1 && out_w >= 1, "output_size must be >= 1, got (", out_h, ", ", out_w, ")");

  luab::ops::LabelPoolArgs a{static_cast<const float*>(scores.data()), indices.data(), ib,
                             static_cast<const float*>(boxes.data()), B, K, S, num_classes, out_h, out_w, legacy,
                             softmax, nt};
  LUAB_CHECK(num_classes <= std::numeric_limits<int32_t>::max(), "num_classes must be <= ",
             std::numeric_limits<int32_t>::max(), " (class ids are int32), got ", num_classes);
  luab::checked_size("B * num_classes * out_h * out_w (the output)", {B, num_classes, out_h, out_w}, sizeof(float));
  py::array_t<float> out({B, num_classes, out_h, out_w});
  float* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    luab::ops::label_pool(a, o);
  }
  return out;
}

}  // namespace

void init_ops_label_pool(py::module_& ops) {
  ops.def("label_pool", &label_pool_py, py::arg("scores"), py::arg("indices"), py::arg("boxes"),
          py::arg("num_classes"), py::arg("out_h") = 1, py::arg("out_w") = 1, py::arg("legacy") = false,
          py::arg("softmax") = false, py::arg("n_threads") = 0,
          "Sparse LabelPooling: scores f32[B,K,S,S], indices int[B,K,S,S], boxes f32[B,4] (x0,y0,x1,y1) -> "
          "f32[B,C,out_h,out_w] (softmax over C if softmax), bit-identical to torchvision's CPU roi_align "
          "(../shared/docs/label-pooling.md s.7).");
}
