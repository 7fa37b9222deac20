// CSV rows of an id and a float32 table, formatted on several threads: what an annotation round's posteriors.csv
// (125,689 tasks x 100 classes at ImageNet-100 scale) spends most of its writing time on.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace luab::io {

// The lines "<id>,<v0>,...,<v(k-1)>\n" of rows [0, n) of values [n, k] (row-major), in row order. Each value is
// the shortest decimal that reads back as the same float32 (std::to_chars), so nothing is lost. An id holding a
// comma, a quote or a line break is quoted (quotes doubled), as pandas writes it. n_threads: 0 = OpenMP's
// default.
std::string csv_rows(const std::vector<std::string>& ids, const float* values, int64_t n, int64_t k, int n_threads);

}  // namespace luab::io
