// Many ImageNet-AB documents at once: parsed in parallel (OpenMP, one document per task, a refused
// document never stops the batch), then flattened in document order into the columns of ImageNetBatch.
#include <omp.h>

#include <exception>

#include "byproducts/imagenet_xml.hpp"
#include "common/parallel.hpp"

namespace luab::byproducts {

ImageNetBatch parse_imagenet_batch(const std::vector<std::string_view>& docs, int n_threads) {
  const int64_t n = static_cast<int64_t>(docs.size());
  std::vector<ImageNetDocOut> out(docs.size());
  ImageNetBatch b;
  b.ok.assign(docs.size(), 0);
  b.error.assign(docs.size(), std::string());
  const int nt = n < 64 ? 1 : luab::threads_or_default(n_threads);
  // No exception may leave the parallel region (std::terminate) and nothing in it may allocate outside a try:
  // a refused document keeps its exception (copying an exception_ptr cannot fail) and becomes a message after.
  std::vector<std::exception_ptr> failed(docs.size());
#pragma omp parallel for schedule(dynamic, 16) num_threads(nt)
  for (int64_t i = 0; i < n; ++i) {
    try {
      parse_imagenet_doc(docs[i], out[i]);
      b.ok[i] = 1;
    } catch (...) {
      failed[i] = std::current_exception();
      out[i] = ImageNetDocOut();  // move assignment: does not allocate
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!failed[i]) continue;
    try {
      std::rethrow_exception(failed[i]);
    } catch (const std::exception& e) {
      b.error[i] = e.what();
    } catch (...) {
      b.error[i] = "unknown error";
    }
  }
  // Flatten in document order.
  int64_t n_rec = 0, n_box = 0, n_click = 0, n_trace = 0, n_hover = 0;
  for (const auto& d : out) {
    n_rec += static_cast<int64_t>(d.recs.size());
    n_box += static_cast<int64_t>(d.box_names.size());
    n_click += static_cast<int64_t>(d.click_t.size());
    n_trace += static_cast<int64_t>(d.trace_t.size());
    n_hover += static_cast<int64_t>(d.hover_t.size());
  }
  b.folder.reserve(n), b.filename.reserve(n), b.size.reserve(3 * n);
  b.box_off.reserve(n + 1), b.rec_off.reserve(n + 1);
  b.boxes.reserve(4 * n_box), b.box_names.reserve(n_box);
  b.rec_int.reserve(kRecIntCols * n_rec), b.rec_str.reserve(kRecStrCols * n_rec);
  b.click_off.reserve(n_rec + 1), b.trace_off.reserve(n_rec + 1), b.hover_off.reserve(n_rec + 1);
  b.click_xy.reserve(2 * n_click), b.click_t.reserve(n_click);
  b.trace_xy.reserve(2 * n_trace), b.trace_t.reserve(n_trace);
  b.hover_enter.reserve(n_hover), b.hover_t.reserve(n_hover);
  b.box_off.push_back(0), b.rec_off.push_back(0);
  b.click_off.push_back(0), b.trace_off.push_back(0), b.hover_off.push_back(0);
  for (const auto& d : out) {
    b.folder.push_back(d.folder);
    b.filename.push_back(d.filename);
    b.size.insert(b.size.end(), d.size, d.size + 3);
    b.boxes.insert(b.boxes.end(), d.boxes.begin(), d.boxes.end());
    b.box_names.insert(b.box_names.end(), d.box_names.begin(), d.box_names.end());
    b.box_off.push_back(static_cast<int64_t>(b.box_names.size()));
    for (const auto& r : d.recs) {
      b.rec_int.insert(b.rec_int.end(), r.ints, r.ints + kRecIntCols);
      b.rec_str.insert(b.rec_str.end(), r.str, r.str + kRecStrCols);
      b.click_off.push_back(b.click_off.back() + r.n_click);
      b.trace_off.push_back(b.trace_off.back() + r.n_trace);
      b.hover_off.push_back(b.hover_off.back() + r.n_hover);
    }
    b.rec_off.push_back(b.rec_off.back() + static_cast<int64_t>(d.recs.size()));
    b.click_xy.insert(b.click_xy.end(), d.click_xy.begin(), d.click_xy.end());
    b.click_t.insert(b.click_t.end(), d.click_t.begin(), d.click_t.end());
    b.trace_xy.insert(b.trace_xy.end(), d.trace_xy.begin(), d.trace_xy.end());
    b.trace_t.insert(b.trace_t.end(), d.trace_t.begin(), d.trace_t.end());
    b.hover_enter.insert(b.hover_enter.end(), d.hover_enter.begin(), d.hover_enter.end());
    b.hover_t.insert(b.hover_t.end(), d.hover_t.begin(), d.hover_t.end());
  }
  return b;
}

}  // namespace luab::byproducts
