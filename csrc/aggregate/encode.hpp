// The encoding work around an EM fit that pandas/numpy would otherwise do single-threaded on the hot path:
// integer ids to dense codes (a DataFrame's task/worker/label columns), and the argmax of each posterior row.
#pragma once

#include <cstdint>
#include <vector>

namespace luab::aggregate {

// Largest id range (max - min + 1) the direct-address factorizer accepts for n values: a table of that many
// int32 is allocated, so it must stay of the order of the input; wider ranges are left to a hash (pandas).
inline int64_t max_factorize_range(int64_t n) { return 4 * n + (int64_t{1} << 20); }

// codes[i] = dense code of values[i]; uniques in order of first appearance (sorted = false, pandas.factorize's
// order) or ascending (sorted = true). Returns false, writing nothing, when the range exceeds the limit above.
bool factorize_integers(const int64_t* values, int64_t n, bool sorted, int64_t* codes,
                        std::vector<int64_t>& uniques);

// out[i] = the first index of the maximum of row i of x [rows, k], numpy.argmax's rule (a row with a NaN: the
// first NaN).
template <typename T>
void argmax_rows(const T* x, int64_t rows, int64_t k, int64_t* out, int n_threads);

}  // namespace luab::aggregate
