// A small, strict parser for the ImageNet-AB XML dialect (shared/docs/byproducts.md, 1a), the compiled
// twin of luab_fast/byproducts/_imagenet_xml.py::parse_xml_reference. It accepts a subset of XML:
// printable ASCII only, no entity or character references, no comments / CDATA / DOCTYPE / processing
// instructions (only a leading <?xml version="1.0" ...?>), no namespace prefixes. Anything outside that
// subset, and any malformed or out-of-range value, throws std::invalid_argument; the Python side then
// re-parses that file with the reference, which has the last word. So whatever this parser accepts it
// must return exactly as the reference does (tests/test_byproducts_imagenet.py fuzzes that).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace luab::byproducts {

// Columns of ImageNetBatch::rec_int, in this order (luab_fast/byproducts/_imagenet_xml.py::assemble).
enum RecInt : int {
  kPageIdx, kSelectedCount, kHoveredCount, kEstimateTime, kImageWidth, kImageHeight, kOriginalWidth,
  kOriginalHeight, kPosX, kPosY, kSelected, kRecIntCols
};
// Columns of ImageNetBatch::rec_str: worker_id, assignment_id, hit_id, imageID.
constexpr int kRecStrCols = 4;

struct ImageNetRecordOut {
  std::string_view str[kRecStrCols];
  int64_t ints[kRecIntCols];
  int64_t n_click = 0, n_trace = 0, n_hover = 0;
};

// One file. String views point into the input document.
struct ImageNetDocOut {
  std::string_view folder, filename;
  int64_t size[3] = {0, 0, 0};              // <size> width, height, depth
  std::vector<float> boxes;                 // [b, 4] xmin, ymin, xmax, ymax
  std::vector<std::string_view> box_names;  // [b]
  std::vector<ImageNetRecordOut> recs;      // [r]
  std::vector<float> click_xy, trace_xy;    // [c, 2], [p, 2]: all records' events, record by record
  std::vector<int64_t> click_t, trace_t, hover_t;
  std::vector<uint8_t> hover_enter;
};

// Parses one document into `out` (cleared first). Throws std::invalid_argument.
void parse_imagenet_doc(std::string_view doc, ImageNetDocOut& out);

// Many documents, flattened: per doc n, per record R (CSR offsets), per event.
struct ImageNetBatch {
  std::vector<uint8_t> ok;                         // [n] 0: refused, see error[i]
  std::vector<std::string> error;                  // [n] "" when ok
  std::vector<std::string_view> folder, filename;  // [n]
  std::vector<int64_t> size;                       // [n, 3]
  std::vector<int64_t> box_off;                    // [n + 1]
  std::vector<float> boxes;                        // [B, 4]
  std::vector<std::string_view> box_names;         // [B]
  std::vector<int64_t> rec_off;                    // [n + 1]
  std::vector<int64_t> rec_int;                    // [R, kRecIntCols]
  std::vector<std::string_view> rec_str;           // [R, kRecStrCols]
  std::vector<int64_t> click_off, trace_off, hover_off;  // [R + 1]
  std::vector<float> click_xy, trace_xy;           // [C, 2], [P, 2]
  std::vector<int64_t> click_t, trace_t, hover_t;  // [C], [P], [H] epoch ms
  std::vector<uint8_t> hover_enter;                // [H]
};

// Parses docs in parallel (OpenMP, n_threads <= 0: all); never throws for a bad document.
ImageNetBatch parse_imagenet_batch(const std::vector<std::string_view>& docs, int n_threads);

}  // namespace luab::byproducts
