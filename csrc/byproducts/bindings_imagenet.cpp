// luab_fast._C.byproducts.parse_imagenet_xml: many ImageNet-AB XML documents → flat numpy columns.
// Collects the bytes under the GIL, parses without it (OpenMP), and hands back arrays that own their
// buffers plus lists of str; luab_fast/byproducts/_imagenet_xml.py::assemble turns them into samples.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <string_view>
#include <vector>

#include "byproducts/imagenet_xml.hpp"
#include "common/check.hpp"
#include "common/parallel.hpp"
#include "common/pyarray.hpp"

namespace py = pybind11;
namespace bp = luab::byproducts;

namespace {

using luab::to_numpy;

py::list str_list(const std::vector<std::string_view>& v) {
  py::list out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    // the parser let through printable ASCII only, so this cannot fail to decode
    PyObject* s = PyUnicode_FromStringAndSize(v[i].data(), static_cast<py::ssize_t>(v[i].size()));
    if (!s) throw py::error_already_set();
    PyList_SET_ITEM(out.ptr(), static_cast<py::ssize_t>(i), s);
  }
  return out;
}

py::dict parse_imagenet_xml(const py::list& docs, int64_t n_threads_arg) {
  const int n_threads = luab::check_threads(n_threads_arg);  // before any work: 100000 threads crash libgomp
  std::vector<std::string_view> views;
  views.reserve(docs.size());
  for (size_t i = 0; i < docs.size(); ++i) {
    PyObject* o = PyList_GET_ITEM(docs.ptr(), static_cast<py::ssize_t>(i));
    LUAB_CHECK(PyBytes_Check(o), "docs[", i, "] must be bytes, got ", Py_TYPE(o)->tp_name);
    views.emplace_back(PyBytes_AS_STRING(o), static_cast<size_t>(PyBytes_GET_SIZE(o)));
  }
  bp::ImageNetBatch b;
  {
    py::gil_scoped_release nogil;
    b = bp::parse_imagenet_batch(views, n_threads);
  }
  const auto n = static_cast<py::ssize_t>(views.size());
  const auto n_box = static_cast<py::ssize_t>(b.box_names.size());
  const auto n_rec = static_cast<py::ssize_t>(b.rec_off.back());
  const auto n_click = static_cast<py::ssize_t>(b.click_t.size());
  const auto n_trace = static_cast<py::ssize_t>(b.trace_t.size());
  const auto n_hover = static_cast<py::ssize_t>(b.hover_t.size());
  const py::dtype boolean("bool");
  py::dict out;
  out["ok"] = to_numpy(std::move(b.ok), {n}, boolean);
  py::list errors(b.error.size());
  for (size_t i = 0; i < b.error.size(); ++i) errors[i] = py::str(b.error[i]);
  out["error"] = errors;
  out["folder"] = str_list(b.folder);
  out["filename"] = str_list(b.filename);
  out["size"] = to_numpy(std::move(b.size), {n, 3});
  out["box_off"] = to_numpy(std::move(b.box_off), {n + 1});
  out["boxes"] = to_numpy(std::move(b.boxes), {n_box, 4});
  out["box_names"] = str_list(b.box_names);
  out["rec_off"] = to_numpy(std::move(b.rec_off), {n + 1});
  out["rec_int"] = to_numpy(std::move(b.rec_int), {n_rec, bp::kRecIntCols});
  out["rec_str"] = str_list(b.rec_str);
  out["click_off"] = to_numpy(std::move(b.click_off), {n_rec + 1});
  out["trace_off"] = to_numpy(std::move(b.trace_off), {n_rec + 1});
  out["hover_off"] = to_numpy(std::move(b.hover_off), {n_rec + 1});
  out["click_xy"] = to_numpy(std::move(b.click_xy), {n_click, 2});
  out["click_t"] = to_numpy(std::move(b.click_t), {n_click});
  out["trace_xy"] = to_numpy(std::move(b.trace_xy), {n_trace, 2});
  out["trace_t"] = to_numpy(std::move(b.trace_t), {n_trace});
  out["hover_enter"] = to_numpy(std::move(b.hover_enter), {n_hover}, boolean);
  out["hover_t"] = to_numpy(std::move(b.hover_t), {n_hover});
  return out;
}

// Unsigned tar header checksum of buf[offset:offset + 512], the checksum field counted as spaces.
int64_t tar_header_sum(const py::bytes& buf, int64_t offset) {
  const auto n = static_cast<int64_t>(PyBytes_GET_SIZE(buf.ptr()));
  LUAB_CHECK(offset >= 0 && offset + 512 <= n, "tar_header_sum: offset ", offset, " + 512 is outside the buffer of ",
             n, " bytes");
  const auto* h = reinterpret_cast<const unsigned char*>(PyBytes_AS_STRING(buf.ptr())) + offset;
  int64_t sum = 8 * ' ';
  for (int i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? 0 : h[i];
  return sum;
}

}  // namespace

void init_byproducts_imagenet(py::module_& m) {
  // def_submodule returns the existing luab_fast._C.byproducts when another reader made it first
  auto b = m.def_submodule("byproducts", "Annotation-byproduct readers (ImageNet-AB, COCO-AB)");
  b.def("parse_imagenet_xml", &parse_imagenet_xml, py::arg("docs"), py::arg("n_threads") = 0,
        "Parses ImageNet-AB XML documents (list of bytes) in parallel. Returns a dict of columns: ok [n] "
        "(False: refused, reason in error[i]; the reference parser then decides), folder, filename, "
        "size [n, 3], box_off [n+1], boxes [B, 4] float32, box_names, rec_off [n+1], rec_int [R, 11] int64 "
        "(page_idx, selectedCount, hoveredCount, estimateTime, imageWidth, imageHeight, originalImageWidth, "
        "originalImageHeight, imagePosition x, y, selected), rec_str [R*4] (worker_id, assignment_id, hit_id, "
        "imageID), click/trace/hover_off [R+1], click_xy/trace_xy [*, 2] float32, click_t/trace_t/hover_t "
        "int64 epoch ms, hover_enter bool.");
  b.def("tar_header_sum", &tar_header_sum, py::arg("buf"), py::arg("offset"),
        "Unsigned checksum of the 512-byte tar header at buf[offset:] (checksum field as spaces).");
}
